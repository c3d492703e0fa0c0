//! The example backends, called directly over gRPC with the generated
//! clients: what the README's walk-through promises about them must hold
//! before any of it is checked through the gateway.
//!
//! Their streaming methods are then also called through the gateway, the
//! way the quickstart prints them (NDJSON, SSE and JSON-array framings of
//! WatchOrders, an NDJSON upload to ImportUsers, Track over a WebSocket):
//! the README shows those exchanges, so they are checked end to end here.

#[path = "../examples/backends/mod.rs"]
mod backends;
mod common;

use std::collections::HashSet;

use backends::acme::orders::v1::order_service_client::OrderServiceClient;
use backends::acme::orders::v1::{
    CreateOrderRequest, GetOrderRequest, LineItem, ListOrdersRequest, OrderEvent, OrderEventType, OrderStatus,
    PingRequest, TrackRequest, WatchOrdersRequest,
};
use backends::acme::users::v1::user_service_client::UserServiceClient;
use backends::acme::users::v1::{
    CreateUserRequest, DeactivateUserRequest, DeleteUserRequest, GetUserRequest, ListUsersRequest, ListUsersResponse,
    Role, UpdateUserRequest, User,
};
use backends::acme::users::v2 as users_v2;
use backends::google::rpc;
use common::stream::{within, RawHttp1};
use common::{assert_error, Backend, Descriptors, TestGateway};
use futures_util::{SinkExt as _, StreamExt as _};
use prost_types::FieldMask;
use serde_json::json;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tonic::service::Routes;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// Every backend on an ephemeral port, each with its own fresh store.
struct Backends {
    users: UserServiceClient<Channel>,
    orders: OrderServiceClient<Channel>,
    users_v2: users_v2::user_service_client::UserServiceClient<Channel>,
    servers: Vec<Backend>,
}

impl Backends {
    async fn start() -> Self {
        let servers = vec![
            Backend::start(Routes::new(backends::users_v1())).await,
            Backend::start(Routes::new(backends::orders_v1())).await,
            Backend::start(Routes::new(backends::users_v2())).await,
        ];
        Self {
            users: UserServiceClient::new(channel(&servers[0]).await),
            orders: OrderServiceClient::new(channel(&servers[1]).await),
            users_v2: users_v2::user_service_client::UserServiceClient::new(channel(&servers[2]).await),
            servers,
        }
    }

    async fn shutdown(self) {
        drop((self.users, self.orders, self.users_v2));
        for server in self.servers {
            server.shutdown().await;
        }
    }
}

async fn channel(backend: &Backend) -> Channel {
    Channel::from_shared(backend.url()).expect("uri").connect().await.expect("connect")
}

fn rich(status: &Status) -> rpc::Status {
    let rich = rpc::Status::from_tonic(status).expect("grpc-status-details-bin holds a google.rpc.Status");
    assert_eq!(rich.code, status.code() as i32, "details code agrees with grpc-status");
    assert_eq!(rich.message, status.message(), "details message agrees with grpc-message");
    rich
}

fn violated_fields(status: &Status) -> Vec<String> {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let bad: rpc::BadRequest = rich(status).detail().expect("a BadRequest detail");
    bad.field_violations.into_iter().map(|v| v.field).collect()
}

fn new_user(name: &str, email: &str) -> CreateUserRequest {
    CreateUserRequest { display_name: name.into(), email: email.into(), ..Default::default() }
}

async fn list(b: &mut Backends, request: ListUsersRequest) -> Result<ListUsersResponse, Status> {
    b.users.list_users(request).await.map(tonic::Response::into_inner)
}

/// Follows `next_page_token` to the end; returns the ids of every page.
async fn all_pages(b: &mut Backends, request: ListUsersRequest) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut token = String::new();
    loop {
        let page = list(b, ListUsersRequest { page_token: token, ..request.clone() }).await.expect("list");
        pages.push(page.users.iter().map(|u| u.id.clone()).collect());
        if page.next_page_token.is_empty() {
            return pages;
        }
        assert!(pages.len() < 100, "paging does not terminate");
        token = page.next_page_token;
    }
}

#[tokio::test]
async fn get_finds_seeded_users_and_not_found_carries_resource_info() {
    let mut b = Backends::start().await;

    let ada = b.users.get_user(GetUserRequest { id: "1001".into() }).await.expect("get").into_inner();
    assert_eq!(ada.id, "1001");
    assert_eq!(ada.display_name, "Ada Lovelace");
    assert_eq!(ada.role(), Role::Admin);
    assert!(ada.create_time.is_some() && ada.active);

    let err = b.users.get_user(GetUserRequest { id: "9999".into() }).await.expect_err("missing user");
    assert_eq!(err.code(), Code::NotFound);
    let info: rpc::ResourceInfo = rich(&err).detail().expect("a ResourceInfo detail");
    assert_eq!(info.resource_name, "users/9999");
    assert_eq!(info.resource_type, "type.googleapis.com/acme.users.v1.User");

    b.shutdown().await;
}

#[tokio::test]
async fn create_assigns_an_id_and_defaults_then_get_returns_it() {
    let mut b = Backends::start().await;

    let mut request = new_user("  Barbara Liskov ", "barbara@example.com");
    request.labels.insert("team".into(), "languages".into());
    let created = b.users.create_user(request).await.expect("create").into_inner();
    assert!(!created.id.is_empty());
    assert_eq!(created.display_name, "Barbara Liskov", "display name is trimmed");
    assert_eq!(created.role(), Role::Member, "ROLE_UNSPECIFIED becomes ROLE_MEMBER");
    assert!(created.active && created.create_time.is_some());
    assert_eq!(created.login_count, 0);
    assert_eq!(created.labels.get("team").map(String::as_str), Some("languages"));

    let fetched = b.users.get_user(GetUserRequest { id: created.id.clone() }).await.expect("get").into_inner();
    assert_eq!(fetched, created);

    let other = b.users.create_user(new_user("Someone", "someone@example.com")).await.expect("create").into_inner();
    assert_ne!(other.id, created.id);

    b.shutdown().await;
}

#[tokio::test]
async fn create_rejects_bad_input_with_bad_request_and_duplicates_with_already_exists() {
    let mut b = Backends::start().await;

    let err = b.users.create_user(new_user(" ", "not-an-email")).await.expect_err("invalid");
    assert_eq!(violated_fields(&err), ["display_name", "email"]);

    for email in ["", "a@b", "@example.com", "a@@example.com", "a b@example.com", "a@example."] {
        let err = b.users.create_user(new_user("Name", email)).await.expect_err(email);
        assert_eq!(violated_fields(&err), ["email"], "email {email:?}");
    }

    let err = b
        .users
        .create_user(CreateUserRequest { role: 42, ..new_user("Name", "name@example.com") })
        .await
        .expect_err("unknown role");
    assert_eq!(violated_fields(&err), ["role"]);

    let err = b.users.create_user(new_user("Ada Again", "ADA@example.com")).await.expect_err("duplicate");
    assert_eq!(err.code(), Code::AlreadyExists);
    let info: rpc::ResourceInfo = rich(&err).detail().expect("a ResourceInfo detail");
    assert_eq!(info.resource_name, "users/1001");

    b.shutdown().await;
}

#[tokio::test]
async fn list_pages_cover_every_user_once_in_id_order() {
    let mut b = Backends::start().await;
    for i in 0..4 {
        b.users.create_user(new_user(&format!("Extra {i}"), &format!("extra{i}@example.com"))).await.expect("create");
    }
    let everyone = all_pages(&mut b, ListUsersRequest { page_size: 100, ..Default::default() }).await;
    assert_eq!(everyone.len(), 1, "one page holds every user");
    let everyone = everyone.concat();
    assert_eq!(everyone.len(), 7);

    for page_size in 1..=3 {
        let pages = all_pages(&mut b, ListUsersRequest { page_size, ..Default::default() }).await;
        assert!(pages.iter().all(|p| p.len() <= page_size as usize), "page_size {page_size}: {pages:?}");
        assert!(pages.iter().all(|p| !p.is_empty()), "no empty page before the end: {pages:?}");
        assert_eq!(pages.concat(), everyone, "page_size {page_size}");
    }

    let first = list(&mut b, ListUsersRequest { page_size: 2, ..Default::default() }).await.expect("list");
    assert_eq!(first.next_page_token, backends::page_token(&first.users[1].id), "the token the quickstart prints");

    b.shutdown().await;
}

#[tokio::test]
async fn list_filters_by_role_and_name_prefix_and_pages_within_the_filter() {
    let mut b = Backends::start().await;

    let admins = all_pages(&mut b, ListUsersRequest { role: Role::Admin.into(), ..Default::default() }).await;
    assert_eq!(admins.concat(), ["1001"]);

    let members =
        all_pages(&mut b, ListUsersRequest { role: Role::Member.into(), page_size: 1, ..Default::default() }).await;
    assert_eq!(members, [vec!["1002".to_owned()], vec!["1003".to_owned()]]);

    let gr = list(&mut b, ListUsersRequest { name_prefix: "gR".into(), ..Default::default() }).await.expect("list");
    assert_eq!(gr.users.iter().map(|u| u.display_name.as_str()).collect::<Vec<_>>(), ["Grace Hopper"]);
    assert!(gr.next_page_token.is_empty());

    let both = ListUsersRequest { role: Role::Admin.into(), name_prefix: "grace".into(), ..Default::default() };
    assert!(list(&mut b, both).await.expect("list").users.is_empty());

    b.shutdown().await;
}

#[tokio::test]
async fn list_rejects_bad_paging_arguments() {
    let mut b = Backends::start().await;
    let err = list(&mut b, ListUsersRequest { page_size: -1, ..Default::default() }).await.expect_err("negative");
    assert_eq!(violated_fields(&err), ["page_size"]);
    let err = list(&mut b, ListUsersRequest { page_token: "not base64!".into(), ..Default::default() })
        .await
        .expect_err("bad token");
    assert_eq!(violated_fields(&err), ["page_token"]);
    b.shutdown().await;
}

#[tokio::test]
async fn update_changes_only_the_masked_fields() {
    let mut b = Backends::start().await;
    let before = b.users.get_user(GetUserRequest { id: "1002".into() }).await.expect("get").into_inner();

    let patch = User {
        id: "1002".into(),
        display_name: "Rear Admiral Grace Hopper".into(),
        email: "hopper@example.com".into(),
        role: Role::Admin.into(),
        login_count: 999,
        ..Default::default()
    };
    let mask = |paths: &[&str]| Some(FieldMask { paths: paths.iter().map(|p| (*p).to_owned()).collect() });

    // JSON name in the mask: only the display name changes.
    let after = b
        .users
        .update_user(UpdateUserRequest { user: Some(patch.clone()), update_mask: mask(&["displayName"]) })
        .await
        .expect("update")
        .into_inner();
    assert_eq!(after, User { display_name: patch.display_name.clone(), ..before.clone() });

    // Proto name in the mask.
    let after = b
        .users
        .update_user(UpdateUserRequest { user: Some(patch.clone()), update_mask: mask(&["email", "role"]) })
        .await
        .expect("update")
        .into_inner();
    assert_eq!(after.email, patch.email);
    assert_eq!(after.role(), Role::Admin);
    assert_eq!(after.login_count, before.login_count, "output-only fields never change");
    assert_eq!(after.labels, before.labels, "labels were not in the mask");

    // No mask: every populated field (AIP-134); labels are empty, so kept.
    let patch = User { id: "1002".into(), display_name: "Grace".into(), ..Default::default() };
    let after = b
        .users
        .update_user(UpdateUserRequest { user: Some(patch), update_mask: None })
        .await
        .expect("update")
        .into_inner();
    assert_eq!(after.display_name, "Grace");
    assert_eq!(after.email, "hopper@example.com");
    assert_eq!(after.labels, before.labels);

    let stored = b.users.get_user(GetUserRequest { id: "1002".into() }).await.expect("get").into_inner();
    assert_eq!(stored, after, "the update is stored");

    b.shutdown().await;
}

#[tokio::test]
async fn update_rejects_bad_masks_values_and_unknown_users() {
    let mut b = Backends::start().await;
    let update = |id: &str, paths: &[&str], user: User| UpdateUserRequest {
        user: Some(User { id: id.into(), ..user }),
        update_mask: Some(FieldMask { paths: paths.iter().map(|p| (*p).to_owned()).collect() }),
    };

    for paths in [&["loginCount"][..], &["create_time"], &["nickname"]] {
        let err = b.users.update_user(update("1002", paths, User::default())).await.expect_err("bad mask");
        assert_eq!(violated_fields(&err), ["update_mask"], "{paths:?}");
    }
    let err = b
        .users
        .update_user(update("1002", &["email"], User { email: "nope".into(), ..Default::default() }))
        .await
        .expect_err("bad email");
    assert_eq!(violated_fields(&err), ["user.email"]);

    let err = b
        .users
        .update_user(update("1002", &["email"], User { email: "ada@example.com".into(), ..Default::default() }))
        .await
        .expect_err("email taken");
    assert_eq!(err.code(), Code::AlreadyExists);

    let err = b
        .users
        .update_user(update("9999", &["display_name"], User { display_name: "X".into(), ..Default::default() }))
        .await
        .expect_err("missing user");
    assert_eq!(err.code(), Code::NotFound);
    let info: rpc::ResourceInfo = rich(&err).detail().expect("a ResourceInfo detail");
    assert_eq!(info.resource_name, "users/9999");

    let err = b.users.update_user(UpdateUserRequest::default()).await.expect_err("no user");
    assert_eq!(violated_fields(&err), ["user"]);

    b.shutdown().await;
}

#[tokio::test]
async fn delete_removes_the_user_once() {
    let mut b = Backends::start().await;
    b.users.delete_user(DeleteUserRequest { id: "1003".into() }).await.expect("delete");
    let err = b.users.get_user(GetUserRequest { id: "1003".into() }).await.expect_err("deleted");
    assert_eq!(err.code(), Code::NotFound);
    let err = b.users.delete_user(DeleteUserRequest { id: "1003".into() }).await.expect_err("already deleted");
    assert_eq!(err.code(), Code::NotFound);
    let left = all_pages(&mut b, ListUsersRequest::default()).await.concat();
    assert_eq!(left, ["1001", "1002"]);
    b.shutdown().await;
}

#[tokio::test]
async fn deactivate_is_a_state_change_that_refuses_to_repeat() {
    let mut b = Backends::start().await;
    let request = DeactivateUserRequest { id: "1002".into(), reason: "retired".into() };
    let user = b.users.deactivate_user(request.clone()).await.expect("deactivate").into_inner();
    assert!(!user.active);
    assert_eq!(user.labels.get("deactivation_reason").map(String::as_str), Some("retired"));

    let err = b.users.deactivate_user(request).await.expect_err("already inactive");
    assert_eq!(err.code(), Code::FailedPrecondition);
    let failure: rpc::PreconditionFailure = rich(&err).detail().expect("a PreconditionFailure detail");
    assert_eq!(failure.violations.len(), 1);
    assert_eq!(failure.violations[0].subject, "users/1002");

    let err = b
        .users
        .deactivate_user(DeactivateUserRequest { id: "9999".into(), ..Default::default() })
        .await
        .expect_err("missing");
    assert_eq!(err.code(), Code::NotFound);
    b.shutdown().await;
}

#[tokio::test]
async fn concurrent_creates_get_distinct_ids() {
    let b = Backends::start().await;
    let calls = (0..16).map(|i| {
        let mut client = b.users.clone();
        tokio::spawn(async move {
            client.create_user(new_user(&format!("User {i}"), &format!("user{i}@example.com"))).await
        })
    });
    let mut ids = HashSet::new();
    for call in calls.collect::<Vec<_>>() {
        let user = call.await.expect("task").expect("create").into_inner();
        assert!(ids.insert(user.id.clone()), "id {} handed out twice", user.id);
    }
    assert_eq!(ids.len(), 16);
    b.shutdown().await;
}

#[tokio::test]
async fn orders_compute_totals_list_newest_first_and_validate_items() {
    let mut b = Backends::start().await;
    let item = |sku: &str, quantity, unit_price_cents| LineItem { sku: sku.into(), quantity, unit_price_cents };

    let order = b
        .orders
        .create_order(CreateOrderRequest {
            user_id: "1001".into(),
            items: vec![item("BOOK-001", 2, 2_999), item("PEN-010", 3, 450)],
            currency_code: String::new(),
        })
        .await
        .expect("create order")
        .into_inner();
    assert_eq!(order.total_cents, 2 * 2_999 + 3 * 450);
    assert_eq!(order.status(), OrderStatus::Pending);
    assert_eq!(order.currency_code, "USD");
    assert!(order.create_time.is_some());

    let fetched = b.orders.get_order(GetOrderRequest { id: order.id.clone() }).await.expect("get").into_inner();
    assert_eq!(fetched, order);

    let listed = b
        .orders
        .list_orders(ListOrdersRequest { user_id: "1001".into(), ..Default::default() })
        .await
        .expect("list")
        .into_inner()
        .orders;
    assert_eq!(listed.first().map(|o| o.id.as_str()), Some(order.id.as_str()), "newest first");
    assert!(listed.iter().all(|o| o.user_id == "1001"));
    let times: Vec<_> = listed.iter().map(|o| o.create_time.map(|t| (t.seconds, t.nanos))).collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");
    for o in &listed {
        let sum: i64 = o.items.iter().map(|i| i64::from(i.quantity) * i.unit_price_cents).sum();
        assert_eq!(o.total_cents, sum, "order {}", o.id);
    }

    let shipped = b
        .orders
        .list_orders(ListOrdersRequest { user_id: "1001".into(), status: OrderStatus::Shipped.into() })
        .await
        .expect("list")
        .into_inner()
        .orders;
    assert!(!shipped.is_empty() && shipped.iter().all(|o| o.status() == OrderStatus::Shipped));

    let err = b
        .orders
        .create_order(CreateOrderRequest {
            user_id: "1001".into(),
            items: vec![item("", 1, 100), item("X", 0, -5)],
            currency_code: "usd".into(),
        })
        .await
        .expect_err("invalid order");
    assert_eq!(
        violated_fields(&err),
        ["items[0].sku", "items[1].quantity", "items[1].unit_price_cents", "currency_code"]
    );

    let err = b
        .orders
        .create_order(CreateOrderRequest {
            user_id: "1001".into(),
            items: vec![item("X", 2, i64::MAX)],
            ..Default::default()
        })
        .await
        .expect_err("overflow");
    assert_eq!(violated_fields(&err), ["items"]);

    let err = b.orders.get_order(GetOrderRequest { id: "nope".into() }).await.expect_err("missing");
    assert_eq!(err.code(), Code::NotFound);
    let info: rpc::ResourceInfo = rich(&err).detail().expect("a ResourceInfo detail");
    assert_eq!(info.resource_name, "orders/nope");

    b.shutdown().await;
}

#[tokio::test]
async fn ping_echoes_and_names_the_service() {
    let mut b = Backends::start().await;
    let pong = b.orders.ping(PingRequest { message: "hello".into() }).await.expect("ping").into_inner();
    assert_eq!(pong.message, "hello");
    assert_eq!(pong.service, "acme.orders.v1.OrderService");
    b.shutdown().await;
}

// ---------------------------------------------------------------------------
// The streaming methods, over gRPC.

/// `(type, order id, status)` of each event, in order.
fn event_rows(events: &[OrderEvent]) -> Vec<(OrderEventType, &str, OrderStatus)> {
    events.iter().map(|e| (e.r#type(), e.order_id.as_str(), e.status())).collect()
}

fn watch(user_id: &str, limit: i32) -> WatchOrdersRequest {
    // 1 ms apart: the pacing is for people at a terminal, not for tests.
    WatchOrdersRequest { user_id: user_id.into(), limit, interval_ms: 1 }
}

async fn watch_all(b: &mut Backends, request: WatchOrdersRequest) -> Result<Vec<OrderEvent>, Status> {
    let mut events = b.orders.watch_orders(request).await?.into_inner();
    let mut all = Vec::new();
    while let Some(event) = within("the next watch event", events.message()).await? {
        all.push(event);
    }
    Ok(all)
}

#[tokio::test]
async fn watch_replays_each_orders_history_oldest_first_and_stops_at_the_limit() {
    use OrderEventType::{Created, StatusChanged};
    use OrderStatus::{Paid, Pending, Shipped};
    let mut b = Backends::start().await;

    // 5001 (shipped) is older than 5002 (paid); the default limit is 5.
    let events = watch_all(&mut b, watch("1001", 0)).await.expect("watch");
    assert_eq!(
        event_rows(&events),
        [
            (Created, "5001", Pending),
            (StatusChanged, "5001", Paid),
            (StatusChanged, "5001", Shipped),
            (Created, "5002", Pending),
            (StatusChanged, "5002", Paid),
        ]
    );
    assert_eq!(events.iter().map(|e| e.sequence).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);

    let events = watch_all(&mut b, watch("1001", 2)).await.expect("watch");
    assert_eq!(event_rows(&events), [(Created, "5001", Pending), (StatusChanged, "5001", Paid)]);

    b.shutdown().await;
}

#[tokio::test]
async fn watch_refuses_unknown_users_and_bad_arguments_before_any_event() {
    let mut b = Backends::start().await;

    let err = b.orders.watch_orders(watch("9999", 0)).await.expect_err("unknown user");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let info: rpc::ResourceInfo = rich(&err).detail().expect("a ResourceInfo detail");
    assert_eq!(info.resource_name, "users/9999");

    let err = b.orders.watch_orders(watch("", 0)).await.expect_err("no user");
    assert_eq!(violated_fields(&err), ["user_id"]);

    let bad = WatchOrdersRequest { user_id: "1001".into(), limit: -1, interval_ms: 60_000 };
    let err = b.orders.watch_orders(bad).await.expect_err("bad pacing");
    assert_eq!(violated_fields(&err), ["limit", "interval_ms"]);

    b.shutdown().await;
}

#[tokio::test]
async fn watch_delivers_the_orders_placed_for_its_user_while_it_is_open() {
    let mut b = Backends::start().await;
    let place = |user_id: &str| CreateOrderRequest {
        user_id: user_id.into(),
        items: vec![LineItem { sku: "MUG-042".into(), quantity: 1, unit_price_cents: 1_250 }],
        currency_code: String::new(),
    };

    // 1003 is seeded but has no orders: the watch has no history and waits.
    let mut events = b.orders.watch_orders(watch("1003", 1)).await.expect("watch").into_inner();
    // Someone else's order is not this watch's business.
    b.orders.create_order(place("1001")).await.expect("order for 1001");
    let theirs = b.orders.create_order(place("1003")).await.expect("order for 1003").into_inner();

    let event = within("the live event", events.message()).await.expect("event").expect("one event");
    assert_eq!(
        (event.sequence, event.r#type(), event.order_id.as_str(), event.status()),
        (1, OrderEventType::Created, theirs.id.as_str(), OrderStatus::Pending)
    );
    assert!(within("the end of the watch", events.message()).await.expect("end").is_none(), "limit 1");

    b.shutdown().await;
}

#[tokio::test]
async fn track_answers_each_message_as_it_arrives_and_ends_on_an_unknown_order() {
    let mut b = Backends::start().await;
    let (send, requests) = tokio::sync::mpsc::channel::<TrackRequest>(4);
    let requests = futures_util::stream::unfold(requests, |mut rx| async { rx.recv().await.map(|r| (r, rx)) });
    let mut updates = b.orders.track(requests).await.expect("track").into_inner();
    let track = |id: &str| TrackRequest { order_id: id.into() };

    // Each answer arrives while the request stream is still open.
    send.send(track("5001")).await.expect("send");
    let update = within("the answer for 5001", updates.message()).await.expect("update").expect("one");
    assert_eq!((update.order_id.as_str(), update.status()), ("5001", OrderStatus::Shipped));
    assert_eq!((update.total_cents, update.currency_code.as_str()), (2_999 + 3 * 450, "USD"));
    send.send(track("5003")).await.expect("send");
    let update = within("the answer for 5003", updates.message()).await.expect("update").expect("one");
    assert_eq!((update.order_id.as_str(), update.status()), ("5003", OrderStatus::Pending));

    send.send(track("9999")).await.expect("send");
    let err = within("the end of the call", updates.message()).await.expect_err("unknown order");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let info: rpc::ResourceInfo = rich(&err).detail().expect("a ResourceInfo detail");
    assert_eq!(info.resource_name, "orders/9999");

    b.shutdown().await;
}

#[tokio::test]
async fn import_creates_every_entry_or_none() {
    let mut b = Backends::start().await;
    let import = |entries: Vec<CreateUserRequest>| futures_util::stream::iter(entries);

    let imported = b
        .users
        .import_users(import(vec![
            new_user("Edsger Dijkstra", "edsger@example.com"),
            new_user("Frances Allen", "frances@example.com"),
        ]))
        .await
        .expect("import")
        .into_inner();
    assert_eq!(imported.created_count, 2);
    assert_eq!(imported.user_ids, ["1004", "1005"]);
    let frances = b.users.get_user(GetUserRequest { id: "1005".into() }).await.expect("get").into_inner();
    assert_eq!((frances.display_name.as_str(), frances.role()), ("Frances Allen", Role::Member));

    // A bad entry fails the call and nothing before it is created.
    let err = b
        .users
        .import_users(import(vec![new_user("Niklaus Wirth", "niklaus@example.com"), new_user("", "nope")]))
        .await
        .expect_err("bad entry");
    assert_eq!(violated_fields(&err), ["[1].display_name", "[1].email"]);
    assert!(err.message().starts_with("message 1: "), "{err:?}");

    // An email taken in the directory, or twice within the import.
    let err =
        b.users.import_users(import(vec![new_user("Ada again", "ADA@example.com")])).await.expect_err("taken email");
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
    let info: rpc::ResourceInfo = rich(&err).detail().expect("a ResourceInfo detail");
    assert_eq!(info.resource_name, "users/1001");
    let err = b
        .users
        .import_users(import(vec![
            new_user("Niklaus Wirth", "niklaus@example.com"),
            new_user("N. W.", "niklaus@example.com"),
        ]))
        .await
        .expect_err("duplicate email");
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
    assert!(err.message().starts_with("message 1: "), "{err:?}");

    // An import is held in memory until its end, so it has a bound.
    let too_many = (0..=1_000).map(|i| new_user(&format!("User {i}"), &format!("user{i}@example.com")));
    let err = b.users.import_users(import(too_many.collect())).await.expect_err("too many");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().starts_with("message 1000: "), "{err:?}");

    let everyone: Vec<String> = all_pages(&mut b, ListUsersRequest::default()).await.concat();
    assert_eq!(everyone, ["1001", "1002", "1003", "1004", "1005"], "failed imports created nobody");

    // An empty import is a valid one.
    let imported = b.users.import_users(import(Vec::new())).await.expect("empty import").into_inner();
    assert_eq!((imported.created_count, imported.user_ids.len()), (0, 0));

    b.shutdown().await;
}

// ---------------------------------------------------------------------------
// acme.users.v2.UserService: the same people as v1, in v2's shape.

#[tokio::test]
async fn v2_serves_the_v1_people_with_split_names_and_access_levels() {
    let mut b = Backends::start().await;

    let mut levels = Vec::new();
    for id in ["1001", "1002", "1003"] {
        let v1 = b.users.get_user(GetUserRequest { id: id.into() }).await.expect("v1 get").into_inner();
        let v2 = b.users_v2.get_user(users_v2::GetUserRequest { id: id.into() }).await.expect("v2 get").into_inner();
        assert_eq!(v2.id, v1.id);
        assert_eq!(format!("{} {}", v2.given_name, v2.family_name), v1.display_name, "{id}: names split apart");
        assert_eq!((&v2.email, v2.active, v2.create_time), (&v1.email, v1.active, v1.create_time), "{id}");
        levels.push((v1.role(), v2.access_level()));
    }
    use users_v2::AccessLevel;
    assert_eq!(
        levels,
        [(Role::Admin, AccessLevel::Owner), (Role::Member, AccessLevel::Editor), (Role::Member, AccessLevel::Viewer)]
    );

    let err = b.users_v2.get_user(users_v2::GetUserRequest { id: "9999".into() }).await.expect_err("missing user");
    assert_eq!(err.code(), Code::NotFound);
    let info: rpc::ResourceInfo = rich(&err).detail().expect("a ResourceInfo detail");
    assert_eq!(info.resource_type, "type.googleapis.com/acme.users.v2.User");

    b.shutdown().await;
}

#[tokio::test]
async fn v2_search_matches_names_and_email_ignoring_case_and_requires_a_query() {
    let mut b = Backends::start().await;
    let mut search = async |query: &str| {
        b.users_v2
            .search_users(users_v2::SearchUsersRequest { query: query.into() })
            .await
            .map(|r| r.into_inner().users.into_iter().map(|u| u.id).collect::<Vec<_>>())
    };

    assert_eq!(search("HOP").await.expect("family name"), ["1002"]);
    assert_eq!(search("alan").await.expect("given name"), ["1003"]);
    assert_eq!(search("@example.COM").await.expect("email"), ["1001", "1002", "1003"]);
    assert_eq!(search("nobody").await.expect("no match"), Vec::<String>::new());
    assert_eq!(violated_fields(&search("  ").await.expect_err("blank query")), ["query"]);

    b.shutdown().await;
}

#[tokio::test]
async fn v2_create_validates_defaults_and_keeps_a_store_apart_from_v1() {
    let mut b = Backends::start().await;
    let request = |given: &str, family: &str, email: &str, access_level: i32| users_v2::CreateUserRequest {
        given_name: given.into(),
        family_name: family.into(),
        email: email.into(),
        access_level,
    };

    let created = b
        .users_v2
        .create_user(request(" Hypatia ", "", "hypatia@example.com", 0))
        .await
        .expect("a family name is optional")
        .into_inner();
    assert_eq!((created.given_name.as_str(), created.family_name.as_str()), ("Hypatia", ""));
    assert_eq!(created.access_level(), users_v2::AccessLevel::Viewer, "unspecified means viewer");
    assert!(created.active && created.create_time.is_some());
    let again = b.users_v2.get_user(users_v2::GetUserRequest { id: created.id.clone() }).await.expect("get");
    assert_eq!(again.into_inner(), created);
    let err = b.users.get_user(GetUserRequest { id: created.id.clone() }).await.expect_err("v1 never saw it");
    assert_eq!(err.code(), Code::NotFound);

    let err = b.users_v2.create_user(request("", "", "not-an-email", 9)).await.expect_err("invalid");
    assert_eq!(violated_fields(&err), ["given_name", "email", "access_level"]);
    let err = b.users_v2.create_user(request("Ada", "L", "ADA@example.com", 3)).await.expect_err("taken email");
    assert_eq!(err.code(), Code::AlreadyExists);

    b.shutdown().await;
}

#[tokio::test]
async fn v2_pages_cover_every_user_once_in_id_order() {
    let mut b = Backends::start().await;
    let mut pages = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = b
            .users_v2
            .list_users(users_v2::ListUsersRequest { page_size: 2, page_token })
            .await
            .expect("list")
            .into_inner();
        pages.push(page.users.into_iter().map(|u| u.id).collect::<Vec<_>>());
        if page.next_page_token.is_empty() {
            break;
        }
        assert!(pages.len() < 10, "paging does not terminate");
        page_token = page.next_page_token;
    }
    assert_eq!(pages, [vec!["1001", "1002"], vec!["1003"]]);

    let err = b
        .users_v2
        .list_users(users_v2::ListUsersRequest { page_size: -1, page_token: "%%%".into() })
        .await
        .expect_err("bad paging");
    assert_eq!(violated_fields(&err), ["page_size", "page_token"]);

    b.shutdown().await;
}

// ---------------------------------------------------------------------------
// The streaming methods through the gateway, as the quickstart calls them.

/// The v1 users and orders backends behind the gateway, each package routed
/// to its own backend as in the quickstart.
async fn gateway() -> TestGateway {
    let users = Backend::start(Routes::new(backends::users_v1())).await;
    let orders = Backend::start(Routes::new(backends::orders_v1())).await;
    let descriptors = Descriptors::empty().with_shipped("v1/users.binpb").with_shipped("v1/orders.binpb");
    let yaml = format!(
        "descriptors: {{descriptors}}\nupstreams:\n  acme.users.v1: {}\n  acme.orders.v1: {}\n",
        users.url(),
        orders.url()
    );
    common::start(descriptors, yaml, vec![users, orders]).await
}

/// `(sequence, type, orderId, status)` of a WatchOrders event as JSON.
fn event_json(event: &serde_json::Value) -> (i64, &str, &str, &str) {
    let text = |field: &str| event[field].as_str().unwrap_or_else(|| panic!("no {field} in {event}"));
    let sequence = event["sequence"].as_i64().unwrap_or_else(|| panic!("no sequence in {event}"));
    (sequence, text("type"), text("orderId"), text("status"))
}

const CREATED: &str = "ORDER_EVENT_TYPE_CREATED";
const CHANGED: &str = "ORDER_EVENT_TYPE_STATUS_CHANGED";

#[tokio::test]
async fn through_the_gateway_a_watch_is_ndjson_lines_sse_events_or_a_json_array() {
    let gw = gateway().await;

    let mut watch = gw.open("/v1/users/1001/orders:watch?interval_ms=1", &[]).await;
    assert_eq!(watch.status, 200);
    assert!(watch.content_type().starts_with("application/x-ndjson"), "{watch:?}");
    let mut events = Vec::new();
    while let Some(event) = watch.json_line().await {
        events.push(event);
    }
    let rows: Vec<_> = events.iter().map(event_json).collect();
    assert_eq!(
        rows,
        [
            (1, CREATED, "5001", "ORDER_STATUS_PENDING"),
            (2, CHANGED, "5001", "ORDER_STATUS_PAID"),
            (3, CHANGED, "5001", "ORDER_STATUS_SHIPPED"),
            (4, CREATED, "5002", "ORDER_STATUS_PENDING"),
            (5, CHANGED, "5002", "ORDER_STATUS_PAID"),
        ]
    );

    let mut sse =
        gw.open("/v1/users/1001/orders:watch?limit=2&interval_ms=1", &[("accept", "text/event-stream")]).await;
    assert_eq!(sse.status, 200);
    assert!(sse.content_type().starts_with("text/event-stream"), "{sse:?}");
    let mut seen = Vec::new();
    while let Some(event) = sse.event().await {
        if !event.is_comment() {
            seen.push((event.id.clone(), event.json()["orderId"].clone(), event.json()["status"].clone()));
        }
    }
    assert_eq!(
        seen,
        [
            (Some("1".to_owned()), json!("5001"), json!("ORDER_STATUS_PENDING")),
            (Some("2".to_owned()), json!("5001"), json!("ORDER_STATUS_PAID")),
        ]
    );

    let array = gw
        .request(
            reqwest::Method::GET,
            "/v1/users/1001/orders:watch?limit=2&interval_ms=1",
            &[("accept", "application/json")],
            None,
        )
        .await;
    assert_eq!(array.status, 200, "{}", array.text());
    let array = array.json();
    let rows: Vec<_> = array.as_array().expect("a JSON array").iter().map(event_json).collect();
    assert_eq!(rows, [(1, CREATED, "5001", "ORDER_STATUS_PENDING"), (2, CHANGED, "5001", "ORDER_STATUS_PAID")]);

    // Refused before the first event: an ordinary error response.
    let unknown = gw.get("/v1/users/9999/orders:watch").await;
    let status = assert_error(&unknown, 404, Code::NotFound as i32);
    assert_eq!(status["message"], "users/9999 not found", "{status}");

    gw.shutdown().await;
}

#[tokio::test]
async fn through_the_gateway_an_open_watch_gets_an_order_the_moment_it_is_placed() {
    let gw = gateway().await;

    let mut watch = gw.open("/v1/users/1002/orders:watch?limit=2&interval_ms=1", &[]).await;
    assert_eq!(watch.status, 200);
    let first = watch.json_line().await.expect("the history event");
    assert_eq!(event_json(&first), (1, CREATED, "5003", "ORDER_STATUS_PENDING"));

    // The watch is now waiting on the backend; the order placed next is
    // its second and last event.
    let order = gw
        .post_json(
            "/v1/orders",
            r#"{"userId": "1002", "items": [{"sku": "PEN-010", "quantity": 1, "unitPriceCents": 450}]}"#,
        )
        .await;
    assert_eq!(order.status, 200, "{}", order.text());
    let id = order.json()["id"].as_str().expect("order id").to_owned();
    let live = watch.json_line().await.expect("the live event");
    assert_eq!(event_json(&live), (2, CREATED, id.as_str(), "ORDER_STATUS_PENDING"));
    assert_eq!(watch.line().await, None, "limit 2 ends the stream");

    gw.shutdown().await;
}

#[tokio::test]
async fn through_the_gateway_an_ndjson_or_array_body_streams_into_import_users() {
    let gw = gateway().await;
    let ndjson = [("content-type", "application/x-ndjson")];

    let body = "{\"displayName\": \"Edsger Dijkstra\", \"email\": \"edsger@example.com\"}\n\
                {\"displayName\": \"Frances Allen\", \"email\": \"frances@example.com\"}\n";
    let imported = gw.request(reqwest::Method::POST, "/v1/users:import", &ndjson, Some(body.into())).await;
    assert_eq!(imported.status, 200, "{}", imported.text());
    assert_eq!(imported.json(), json!({"createdCount": 2, "userIds": ["1004", "1005"]}));
    let frances = gw.get("/v1/users/1005").await;
    assert_eq!(frances.json()["displayName"], "Frances Allen", "{}", frances.text());

    let array = r#"[{"displayName": "Niklaus Wirth", "email": "niklaus@example.com"}]"#;
    let imported = gw.post_json("/v1/users:import", array).await;
    assert_eq!(imported.status, 200, "{}", imported.text());
    assert_eq!(imported.json(), json!({"createdCount": 1, "userIds": ["1006"]}));

    // The backend refuses the entry the moment its line arrives: the answer
    // comes while the request body is still open.
    let mut upload = RawHttp1::open(&gw, "POST", "/v1/users:import", &ndjson, true).await;
    upload.send(b"{\"displayName\": \"Barbara Liskov\", \"email\": \"barbara@example.com\"}\n").await;
    upload.send(b"{\"displayName\": \"\", \"email\": \"not-an-email\"}\n").await;
    let mut refused = upload.response().await;
    assert_eq!(refused.status, 400);
    let status: serde_json::Value = serde_json::from_str(&refused.rest_text().await).expect("a Status JSON body");
    assert_eq!(status["code"], Code::InvalidArgument as i32, "{status}");
    assert!(status["message"].as_str().is_some_and(|m| m.starts_with("message 1: ")), "{status}");
    let violations = &status["details"][0]["fieldViolations"];
    assert_eq!(violations[0]["field"], "[1].display_name", "{status}");
    assert_eq!(violations[1]["field"], "[1].email", "{status}");
    // All or none: Barbara was not created.
    let users = gw.get("/v1/users?page_size=100").await.json();
    let emails: Vec<&str> =
        users["users"].as_array().expect("users").iter().filter_map(|u| u["email"].as_str()).collect();
    assert!(!emails.contains(&"barbara@example.com"), "{emails:?}");

    gw.shutdown().await;
}

/// The next frame of `ws` that is not a ping or pong.
async fn next_frame<S>(ws: &mut S) -> Message
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        match within("the next WebSocket frame", ws.next()).await {
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(frame)) => return frame,
            other => panic!("expected a frame, got {other:?}"),
        }
    }
}

fn text_json(frame: &Message) -> serde_json::Value {
    match frame {
        Message::Text(text) => serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}")),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

#[tokio::test]
async fn through_the_gateway_track_answers_over_a_websocket_and_closes_with_the_status() {
    let gw = gateway().await;
    let url = format!("ws://{}/v1/orders:track", gw.authority());

    let (mut ws, _) = within("the WebSocket handshake", tokio_tungstenite::connect_async(&url)).await.expect("upgrade");
    // One answer per message, each before the next message is sent.
    for (order, status) in [("5001", "ORDER_STATUS_SHIPPED"), ("5003", "ORDER_STATUS_PENDING")] {
        ws.send(Message::text(format!(r#"{{"orderId": "{order}"}}"#))).await.expect("send");
        let update = text_json(&next_frame(&mut ws).await);
        assert_eq!((update["orderId"].as_str(), update["status"].as_str()), (Some(order), Some(status)), "{update}");
    }
    // Our close half-closes the call; its OK status closes the socket.
    ws.close(None).await.expect("close");
    match next_frame(&mut ws).await {
        Message::Close(Some(close)) => assert_eq!(close.code, CloseCode::Normal, "{close:?}"),
        other => panic!("expected a close frame, got {other:?}"),
    }

    // An unknown order ends the call with NOT_FOUND: close 1011 with the
    // Status as its reason, or in a last text frame when it is too long for
    // one.
    let (mut ws, _) = within("the WebSocket handshake", tokio_tungstenite::connect_async(&url)).await.expect("upgrade");
    ws.send(Message::text(r#"{"orderId": "9999"}"#)).await.expect("send");
    let mut error_frame = None;
    let close = loop {
        match next_frame(&mut ws).await {
            Message::Close(close) => break close.expect("a close frame with a status"),
            frame => error_frame = Some(text_json(&frame)["error"].clone()),
        }
    };
    assert_eq!(close.code, CloseCode::Error, "{close:?}");
    let status = error_frame
        .unwrap_or_else(|| serde_json::from_str(&close.reason).unwrap_or_else(|e| panic!("reason ({e}): {close:?}")));
    assert_eq!(status["code"], Code::NotFound as i32, "{status}");
    assert_eq!(status["message"], "orders/9999 not found", "{status}");

    gw.shutdown().await;
}
