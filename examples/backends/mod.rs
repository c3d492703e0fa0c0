//! The example gRPC backends behind the quickstart and the integration tests:
//! `acme.users.v1.UserService`, its incompatible successor
//! `acme.users.v2.UserService` and `acme.orders.v1.OrderService`, each over
//! its own in-memory store, answering errors the way Google APIs do (a
//! `google.rpc.Status` with typed details in `grpc-status-details-bin`), so
//! the gateway's error mapping has something realistic to carry.
//!
//! Shared, not an example of its own: `examples/quickstart.rs` declares it as
//! `mod backends;` and tests include it with
//! `#[path = "../../examples/backends/mod.rs"] mod backends;`.
//!
//! Each backend can also describe itself over gRPC server reflection
//! ([`reflection`] with the backend's own sets), so that a gateway with
//! `descriptors.reflection` needs no descriptor file at all.
//!
//! Every kind of gRPC method is here, so the gateway's streaming has
//! something real to carry: `OrderService.WatchOrders` (server streaming,
//! paced so that a `curl -N` shows events arriving one by one, and live
//! while it waits, so a test can see a message cross the gateway the moment
//! it happens), `OrderService.Track` (bidirectional, one answer per message
//! as it arrives) and `UserService.ImportUsers` (client streaming, checked
//! entry by entry, created all or none).
//!
//! Seed data (every call of [`users_v1`] / [`users_v2`] / [`orders_v1`]
//! starts fresh):
//! - users `1001` Ada Lovelace (v1 admin, v2 owner), `1002` Grace Hopper
//!   (member, editor), `1003` Alan Turing (member, viewer, inactive), the
//!   same people in both versions; new users get `1004`, `1005`, … (the two
//!   versions keep separate stores, as two deployments would)
//! - orders `5001`, `5002` of user `1001` and `5003` of user `1002`; new
//!   orders get `5004`, …

// Each includer uses a different part of this module.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::ops::Bound;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use futures_util::{stream, Stream, StreamExt as _};
use prost::{Message, Name};
use prost_types::{Any, Timestamp};
use tokio::sync::broadcast;
use tonic::service::Routes;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;
use tonic::{Code, Request, Response, Status, Streaming};
use tonic_reflection::server::v1::{ServerReflection, ServerReflectionServer};

/// Generated messages, clients and servers, laid out like the proto packages.
pub mod acme {
    pub mod users {
        pub mod v1 {
            tonic::include_proto!("acme.users.v1");
        }
        pub mod v2 {
            tonic::include_proto!("acme.users.v2");
        }
    }
    pub mod orders {
        pub mod v1 {
            tonic::include_proto!("acme.orders.v1");
        }
    }
}

/// The `google.rpc` messages the backends put into error details.
///
/// Declared by hand because no example proto imports `google/rpc/*.proto`,
/// so build.rs generates no code for them; field numbers follow
/// `proto/google/rpc/{status,error_details}.proto`.
pub mod google {
    pub mod rpc {
        use prost::Name;

        /// The payload of `grpc-status-details-bin`.
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct Status {
            #[prost(int32, tag = "1")]
            pub code: i32,
            #[prost(string, tag = "2")]
            pub message: String,
            #[prost(message, repeated, tag = "3")]
            pub details: Vec<prost_types::Any>,
        }

        #[derive(Clone, PartialEq, prost::Message)]
        pub struct ResourceInfo {
            #[prost(string, tag = "1")]
            pub resource_type: String,
            #[prost(string, tag = "2")]
            pub resource_name: String,
            #[prost(string, tag = "3")]
            pub owner: String,
            #[prost(string, tag = "4")]
            pub description: String,
        }

        #[derive(Clone, PartialEq, prost::Message)]
        pub struct BadRequest {
            #[prost(message, repeated, tag = "1")]
            pub field_violations: Vec<FieldViolation>,
        }

        /// `google.rpc.BadRequest.FieldViolation` (without the optional
        /// `reason` and `localized_message`, which the backends never set).
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct FieldViolation {
            #[prost(string, tag = "1")]
            pub field: String,
            #[prost(string, tag = "2")]
            pub description: String,
        }

        #[derive(Clone, PartialEq, prost::Message)]
        pub struct PreconditionFailure {
            #[prost(message, repeated, tag = "1")]
            pub violations: Vec<PreconditionViolation>,
        }

        /// `google.rpc.PreconditionFailure.Violation`.
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct PreconditionViolation {
            #[prost(string, tag = "1")]
            pub r#type: String,
            #[prost(string, tag = "2")]
            pub subject: String,
            #[prost(string, tag = "3")]
            pub description: String,
        }

        // `type.googleapis.com/` is what every gRPC implementation writes and
        // what the gateway resolves `@type` against; prost's default is a
        // bare `/`.
        macro_rules! google_rpc_name {
            ($($ty:ident => $name:literal),* $(,)?) => {$(
                impl Name for $ty {
                    const NAME: &'static str = $name;
                    const PACKAGE: &'static str = "google.rpc";
                    fn type_url() -> String {
                        format!("type.googleapis.com/{}", Self::full_name())
                    }
                }
            )*};
        }
        google_rpc_name! {
            Status => "Status",
            ResourceInfo => "ResourceInfo",
            BadRequest => "BadRequest",
            FieldViolation => "BadRequest.FieldViolation",
            PreconditionFailure => "PreconditionFailure",
            PreconditionViolation => "PreconditionFailure.Violation",
        }

        impl Status {
            /// The rich status a backend attached to `status`, if any.
            pub fn from_tonic(status: &tonic::Status) -> Result<Self, prost::DecodeError> {
                <Self as prost::Message>::decode(status.details())
            }

            /// The first detail of type `M`.
            pub fn detail<M: Name + Default>(&self) -> Option<M> {
                self.details.iter().find_map(|any| any.to_msg::<M>().ok())
            }
        }
    }
}

use acme::orders::v1 as orders;
use acme::users::v1 as users;
use acme::users::v2 as users_v2;
use orders::order_service_server::{OrderService, OrderServiceServer};
use users::user_service_server::{UserService, UserServiceServer};
use users_v2::user_service_server::{UserService as UserServiceV2, UserServiceServer as UserServiceServerV2};

/// A fresh, seeded `acme.users.v1.UserService`.
pub fn users_v1() -> UserServiceServer<impl UserService> {
    UserServiceServer::new(UserDirectory::seeded())
}

/// A fresh, seeded `acme.users.v2.UserService`: the same people as
/// [`users_v1`], in v2's shape, in a store of its own.
pub fn users_v2() -> UserServiceServerV2<impl UserServiceV2> {
    UserServiceServerV2::new(UserDirectoryV2::seeded())
}

/// A fresh, seeded `acme.orders.v1.OrderService`.
pub fn orders_v1() -> OrderServiceServer<impl OrderService> {
    OrderServiceServer::new(OrderBook::seeded())
}

/// The descriptor sets the backends describe themselves with over gRPC
/// reflection: the committed `descriptors/` files, which carry the
/// `google.api.http` options a gateway needs to route without any file of
/// its own.
pub const USERS_V1_SET: &[u8] = include_bytes!("../../descriptors/v1/users.binpb");
pub const ORDERS_V1_SET: &[u8] = include_bytes!("../../descriptors/v1/orders.binpb");
pub const USERS_V2_SET: &[u8] = include_bytes!("../../descriptors/v2/users.binpb");

/// A `grpc.reflection.v1` service that lists the services of `sets` and
/// serves their files. Give each backend only the sets of what it serves:
/// a gateway routes every service a backend lists to that backend.
///
/// The sets are registered encoded: tonic-reflection then serves each file
/// byte for byte, where a decoded `prost_types` set would lose the
/// `google.api.http` options on re-encoding.
pub fn reflection(
    sets: &[&'static [u8]],
) -> Result<ServerReflectionServer<impl ServerReflection>, tonic_reflection::server::Error> {
    sets.iter()
        .fold(tonic_reflection::server::Builder::configure(), |builder, set| {
            builder.register_encoded_file_descriptor_set(set)
        })
        .build_v1()
}

/// Serves `services` over h2c on `listener` until `shutdown` resolves, then
/// lets in-flight calls finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    services: Routes,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    Server::builder().add_routes(services).serve_with_incoming_shutdown(incoming, shutdown).await
}

// ---------------------------------------------------------------------------
// Errors in the shape Google APIs use (AIP-193).

fn rich_status(code: Code, message: impl Into<String>, details: Vec<Any>) -> Status {
    let message = message.into();
    let payload = google::rpc::Status { code: code as i32, message: message.clone(), details };
    Status::with_details(code, message, payload.encode_to_vec().into())
}

fn pack<M: Name>(message: &M) -> Any {
    Any { type_url: M::type_url(), value: message.encode_to_vec() }
}

fn resource_info(resource_type: &str, name: String, description: String) -> Any {
    pack(&google::rpc::ResourceInfo {
        resource_type: format!("type.googleapis.com/{resource_type}"),
        resource_name: name,
        owner: String::new(),
        description,
    })
}

fn not_found(resource_type: &str, name: String) -> Status {
    let message = format!("{name} not found");
    rich_status(Code::NotFound, message.clone(), vec![resource_info(resource_type, name, message)])
}

/// Collects every problem with a request so one answer lists them all.
#[derive(Default)]
struct Violations(Vec<google::rpc::FieldViolation>);

impl Violations {
    fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(google::rpc::FieldViolation { field: field.into(), description: description.into() });
    }

    fn into_result(self) -> Result<(), Status> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(self.into_status())
        }
    }

    fn into_status(self) -> Status {
        let message = match self.0.as_slice() {
            [only] => format!("invalid {}: {}", only.field, only.description),
            all => format!("invalid request: {} field violations", all.len()),
        };
        let detail = pack(&google::rpc::BadRequest { field_violations: self.0 });
        rich_status(Code::InvalidArgument, message, vec![detail])
    }
}

fn invalid(field: &str, description: &str) -> Status {
    let mut v = Violations::default();
    v.add(field, description);
    v.into_status()
}

/// A poisoned lock only means another call panicked mid-update; the maps are
/// still structurally valid, and an example should keep answering.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn now() -> Timestamp {
    Timestamp::from(SystemTime::now())
}

fn at(seconds: i64) -> Option<Timestamp> {
    Some(Timestamp { seconds, nanos: 0 })
}

// ---------------------------------------------------------------------------
// The people both user directories start with.

/// One seeded person, with their v1 role and v2 access level side by side,
/// so that `/v1/users/1001` and `/v2/users/1001` are visibly the same user
/// in two shapes.
struct Person {
    id: &'static str,
    given_name: &'static str,
    family_name: &'static str,
    email: &'static str,
    role: users::Role,
    access_level: users_v2::AccessLevel,
    created: i64,
    active: bool,
}

const PEOPLE: [Person; 3] = [
    Person {
        id: "1001",
        given_name: "Ada",
        family_name: "Lovelace",
        email: "ada@example.com",
        role: users::Role::Admin,
        access_level: users_v2::AccessLevel::Owner,
        created: 1_705_311_000,
        active: true,
    },
    Person {
        id: "1002",
        given_name: "Grace",
        family_name: "Hopper",
        email: "grace@example.com",
        role: users::Role::Member,
        access_level: users_v2::AccessLevel::Editor,
        created: 1_706_000_400,
        active: true,
    },
    // Inactive, so `POST /v1/users/1003:deactivate` shows a precondition error.
    Person {
        id: "1003",
        given_name: "Alan",
        family_name: "Turing",
        email: "alan@example.com",
        role: users::Role::Member,
        access_level: users_v2::AccessLevel::Viewer,
        created: 1_707_210_000,
        active: false,
    },
];

const FIRST_NEW_USER_ID: u64 = 1004;

// ---------------------------------------------------------------------------
// acme.users.v1.UserService

const USER_TYPE: &str = "acme.users.v1.User";
const DEFAULT_PAGE_SIZE: usize = 10;
const MAX_PAGE_SIZE: usize = 100;
const MAX_DISPLAY_NAME: usize = 100;
/// ImportUsers holds every entry until the last has arrived (all or none),
/// so a stream may not grow without bound.
const MAX_IMPORT: usize = 1_000;

/// The fields `UpdateUser` may change, by proto name.
const MUTABLE_USER_FIELDS: [&str; 4] = ["display_name", "email", "role", "labels"];
const OUTPUT_ONLY_USER_FIELDS: [&str; 4] = ["id", "create_time", "active", "login_count"];

struct UserDirectory {
    state: Mutex<Users>,
}

struct Users {
    /// Ordered by id, which is the listing order and what page tokens point into.
    by_id: BTreeMap<String, users::User>,
    next_id: u64,
}

impl UserDirectory {
    fn seeded() -> Self {
        let mut by_id: BTreeMap<String, users::User> = PEOPLE
            .iter()
            .map(|p| {
                let user = users::User {
                    id: p.id.into(),
                    display_name: format!("{} {}", p.given_name, p.family_name),
                    email: p.email.into(),
                    role: p.role.into(),
                    create_time: at(p.created),
                    active: p.active,
                    labels: HashMap::new(),
                    login_count: 0,
                };
                (user.id.clone(), user)
            })
            .collect();
        // v1-only fields, so the walk-through shows an int64 and a map.
        for (id, logins, team) in [("1001", 42, "engines"), ("1002", 7, "compilers")] {
            if let Some(user) = by_id.get_mut(id) {
                user.login_count = logins;
                user.labels.insert("team".into(), team.into());
            }
        }
        Self { state: Mutex::new(Users { by_id, next_id: FIRST_NEW_USER_ID }) }
    }
}

impl Users {
    fn get_mut(&mut self, id: &str) -> Result<&mut users::User, Status> {
        self.by_id.get_mut(id).ok_or_else(|| not_found(USER_TYPE, format!("users/{id}")))
    }

    /// Creates the user `req` describes (already checked) with the next id.
    fn insert_new(&mut self, req: users::CreateUserRequest, role: users::Role) -> users::User {
        let id = self.next_id.to_string();
        self.next_id += 1;
        let user = users::User {
            id: id.clone(),
            display_name: req.display_name.trim().to_owned(),
            email: req.email,
            role: role.into(),
            create_time: Some(now()),
            active: true,
            labels: req.labels,
            login_count: 0,
        };
        self.by_id.insert(id, user.clone());
        user
    }

    /// ALREADY_EXISTS when another user than `except` has `email`.
    fn check_email_free(&self, email: &str, except: Option<&str>) -> Result<(), Status> {
        let taken = self.by_id.values().find(|u| u.email.eq_ignore_ascii_case(email) && Some(u.id.as_str()) != except);
        match taken {
            None => Ok(()),
            Some(owner) => {
                let message = format!("email {email} is already used by users/{}", owner.id);
                let detail = resource_info(USER_TYPE, format!("users/{}", owner.id), message.clone());
                Err(rich_status(Code::AlreadyExists, message, vec![detail]))
            }
        }
    }
}

/// The checks of CreateUser (and of every ImportUsers entry); returns the
/// role the user gets (ROLE_UNSPECIFIED means ROLE_MEMBER).
fn check_new_user(v: &mut Violations, req: &users::CreateUserRequest) -> users::Role {
    check_display_name(v, "display_name", &req.display_name);
    check_email(v, "email", &req.email);
    match role_of(req.role) {
        Some(users::Role::Unspecified) => users::Role::Member,
        Some(role) => role,
        None => {
            v.add("role", format!("unknown role {}", req.role));
            users::Role::Member
        }
    }
}

/// `status` about one message of a client stream, which has no field path
/// of its own to point at it: its 0-based index goes in front of the
/// message text and of each BadRequest field path (`message 2: …`,
/// `[2].email`), the way the gateway names a message it could not parse.
fn at_message(index: usize, status: &Status) -> Status {
    let message = format!("message {index}: {}", status.message());
    let mut details = google::rpc::Status::from_tonic(status).map(|rich| rich.details).unwrap_or_default();
    for detail in &mut details {
        if let Ok(mut bad) = detail.to_msg::<google::rpc::BadRequest>() {
            for violation in &mut bad.field_violations {
                violation.field = format!("[{index}].{}", violation.field);
            }
            *detail = pack(&bad);
        }
    }
    rich_status(status.code(), message, details)
}

fn check_display_name(v: &mut Violations, field: &str, name: &str) {
    if name.trim().is_empty() {
        v.add(field, "must not be empty");
    } else if name.chars().count() > MAX_DISPLAY_NAME {
        v.add(field, format!("must be at most {MAX_DISPLAY_NAME} characters"));
    }
}

fn check_email(v: &mut Violations, field: &str, email: &str) {
    if email.is_empty() {
        v.add(field, "must not be empty");
    } else if !looks_like_email(email) {
        v.add(field, format!("{email:?} is not an email address"));
    }
}

/// Deliberately loose (one `@`, a dotted domain, no spaces): enough to show
/// a validation error, without pretending to implement RFC 5322.
fn looks_like_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !email.chars().any(char::is_whitespace)
}

/// `role` as sent; `None` for a number the enum does not define.
fn role_of(raw: i32) -> Option<users::Role> {
    users::Role::try_from(raw).ok()
}

/// `displayName` → `display_name`; proto names pass through unchanged.
fn proto_field_name(path: &str) -> String {
    let mut out = String::with_capacity(path.len() + 4);
    for c in path.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// The `next_page_token` ListUsers returns for a page that ends at user
/// `last_id` (opaque to clients; exposed for the quickstart's walk-through).
pub fn page_token(last_id: &str) -> String {
    URL_SAFE_NO_PAD.encode(last_id)
}

/// The page size (0 → default, capped) and the id a page token says to
/// continue after; a negative size or a foreign token is a violation.
fn paging(page_size: i32, page_token: &str, v: &mut Violations) -> (usize, Option<String>) {
    let size = match usize::try_from(page_size) {
        Ok(0) => DEFAULT_PAGE_SIZE,
        Ok(n) => n.min(MAX_PAGE_SIZE),
        Err(_) => {
            v.add("page_size", "must not be negative");
            0
        }
    };
    let after = if page_token.is_empty() {
        None
    } else {
        let after = parse_page_token(page_token);
        if after.is_none() {
            v.add("page_token", "is not a token this service returned");
        }
        after
    };
    (size, after)
}

fn parse_page_token(token: &str) -> Option<String> {
    let bytes = URL_SAFE_NO_PAD.decode(token).ok()?;
    String::from_utf8(bytes).ok()
}

#[tonic::async_trait]
impl UserService for UserDirectory {
    async fn get_user(&self, request: Request<users::GetUserRequest>) -> Result<Response<users::User>, Status> {
        let id = request.into_inner().id;
        let mut state = lock(&self.state);
        Ok(Response::new(state.get_mut(&id)?.clone()))
    }

    async fn list_users(
        &self,
        request: Request<users::ListUsersRequest>,
    ) -> Result<Response<users::ListUsersResponse>, Status> {
        let req = request.into_inner();
        let mut v = Violations::default();
        let (page_size, after) = paging(req.page_size, &req.page_token, &mut v);
        let role = role_of(req.role);
        if role.is_none() {
            v.add("role", format!("unknown role {}", req.role));
        }
        v.into_result()?;

        let prefix = req.name_prefix.to_lowercase();
        let role = role.unwrap_or(users::Role::Unspecified);
        let state = lock(&self.state);
        let start = after.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
        let mut matching = state.by_id.range::<str, _>((start, Bound::Unbounded)).map(|(_, u)| u).filter(|u| {
            (role == users::Role::Unspecified || u.role == role as i32)
                && (prefix.is_empty() || u.display_name.to_lowercase().starts_with(&prefix))
        });
        let page: Vec<users::User> = matching.by_ref().take(page_size).cloned().collect();
        let next_page_token = match (matching.next(), page.last()) {
            (Some(_), Some(last)) => page_token(&last.id),
            _ => String::new(),
        };
        Ok(Response::new(users::ListUsersResponse { users: page, next_page_token }))
    }

    async fn create_user(&self, request: Request<users::CreateUserRequest>) -> Result<Response<users::User>, Status> {
        let req = request.into_inner();
        let mut v = Violations::default();
        let role = check_new_user(&mut v, &req);
        v.into_result()?;

        let mut state = lock(&self.state);
        state.check_email_free(&req.email, None)?;
        Ok(Response::new(state.insert_new(req, role)))
    }

    async fn update_user(&self, request: Request<users::UpdateUserRequest>) -> Result<Response<users::User>, Status> {
        let req = request.into_inner();
        let Some(patch) = req.user else {
            return Err(invalid("user", "is required"));
        };
        if patch.id.is_empty() {
            return Err(invalid("user.id", "is required"));
        }

        let mut v = Violations::default();
        // AIP-134: no mask means "every field the caller populated".
        let paths: Vec<String> = match req.update_mask {
            Some(mask) if !mask.paths.is_empty() => mask.paths.iter().map(|p| proto_field_name(p)).collect(),
            _ => {
                let populated = [
                    !patch.display_name.is_empty(),
                    !patch.email.is_empty(),
                    patch.role != 0,
                    !patch.labels.is_empty(),
                ];
                MUTABLE_USER_FIELDS
                    .iter()
                    .zip(populated)
                    .filter(|(_, set)| *set)
                    .map(|(f, _)| (*f).to_owned())
                    .collect()
            }
        };
        for path in &paths {
            match path.as_str() {
                "display_name" => check_display_name(&mut v, "user.display_name", &patch.display_name),
                "email" => check_email(&mut v, "user.email", &patch.email),
                "role" => match role_of(patch.role) {
                    None | Some(users::Role::Unspecified) => v.add("user.role", "must be ROLE_MEMBER or ROLE_ADMIN"),
                    Some(_) => {}
                },
                "labels" => {}
                p if OUTPUT_ONLY_USER_FIELDS.contains(&p) => v.add("update_mask", format!("{p} is output only")),
                p => v.add("update_mask", format!("{USER_TYPE} has no field {p}")),
            }
        }
        v.into_result()?;

        let mut state = lock(&self.state);
        state.get_mut(&patch.id)?;
        if paths.iter().any(|p| p == "email") {
            state.check_email_free(&patch.email, Some(&patch.id))?;
        }
        let user = state.get_mut(&patch.id)?;
        for path in paths {
            match path.as_str() {
                "display_name" => user.display_name = patch.display_name.trim().to_owned(),
                "email" => user.email.clone_from(&patch.email),
                "role" => user.role = patch.role,
                "labels" => user.labels.clone_from(&patch.labels),
                _ => {}
            }
        }
        Ok(Response::new(user.clone()))
    }

    async fn import_users(
        &self,
        request: Request<Streaming<users::CreateUserRequest>>,
    ) -> Result<Response<users::ImportUsersResponse>, Status> {
        let mut entries = request.into_inner();
        // Checked as each arrives, so a bad entry fails the call at once
        // rather than after the client has sent everything; created only at
        // the end, so that a failed import leaves the directory as it was.
        let mut accepted: Vec<(users::CreateUserRequest, users::Role)> = Vec::new();
        let mut emails: HashMap<String, usize> = HashMap::new();
        while let Some(entry) = entries.message().await? {
            let index = accepted.len();
            if index == MAX_IMPORT {
                let message = format!("message {index}: an import creates at most {MAX_IMPORT} users");
                return Err(rich_status(Code::InvalidArgument, message, Vec::new()));
            }
            let mut v = Violations::default();
            let role = check_new_user(&mut v, &entry);
            v.into_result().map_err(|status| at_message(index, &status))?;
            lock(&self.state).check_email_free(&entry.email, None).map_err(|status| at_message(index, &status))?;
            if let Some(first) = emails.insert(entry.email.to_lowercase(), index) {
                let message = format!("message {index}: email {} is already used by message {first}", entry.email);
                return Err(rich_status(Code::AlreadyExists, message, Vec::new()));
            }
            accepted.push((entry, role));
        }

        let mut state = lock(&self.state);
        // Checked again under the lock that creates them: another call may
        // have taken an email while this stream was still arriving.
        for (index, (entry, _)) in accepted.iter().enumerate() {
            state.check_email_free(&entry.email, None).map_err(|status| at_message(index, &status))?;
        }
        let user_ids: Vec<String> =
            accepted.into_iter().map(|(entry, role)| state.insert_new(entry, role).id).collect();
        let created_count = i32::try_from(user_ids.len()).unwrap_or(i32::MAX);
        Ok(Response::new(users::ImportUsersResponse { created_count, user_ids }))
    }

    async fn delete_user(&self, request: Request<users::DeleteUserRequest>) -> Result<Response<()>, Status> {
        let id = request.into_inner().id;
        let mut state = lock(&self.state);
        match state.by_id.remove(&id) {
            Some(_) => Ok(Response::new(())),
            None => Err(not_found(USER_TYPE, format!("users/{id}"))),
        }
    }

    async fn deactivate_user(
        &self,
        request: Request<users::DeactivateUserRequest>,
    ) -> Result<Response<users::User>, Status> {
        let req = request.into_inner();
        let mut state = lock(&self.state);
        let user = state.get_mut(&req.id)?;
        if !user.active {
            let subject = format!("users/{}", req.id);
            let description = format!("{subject} is already inactive");
            let detail = pack(&google::rpc::PreconditionFailure {
                violations: vec![google::rpc::PreconditionViolation {
                    r#type: "STATE".into(),
                    subject,
                    description: description.clone(),
                }],
            });
            return Err(rich_status(Code::FailedPrecondition, description, vec![detail]));
        }
        user.active = false;
        if !req.reason.is_empty() {
            user.labels.insert("deactivation_reason".into(), req.reason);
        }
        Ok(Response::new(user.clone()))
    }
}

// ---------------------------------------------------------------------------
// acme.users.v2.UserService

const USER_V2_TYPE: &str = "acme.users.v2.User";
const MAX_NAME_PART: usize = 50;
const MAX_QUERY: usize = 100;

struct UserDirectoryV2 {
    state: Mutex<UsersV2>,
}

struct UsersV2 {
    /// Ordered by id, which is the listing order and what page tokens point into.
    by_id: BTreeMap<String, users_v2::User>,
    next_id: u64,
}

impl UserDirectoryV2 {
    fn seeded() -> Self {
        let by_id = PEOPLE
            .iter()
            .map(|p| {
                let user = users_v2::User {
                    id: p.id.into(),
                    given_name: p.given_name.into(),
                    family_name: p.family_name.into(),
                    email: p.email.into(),
                    access_level: p.access_level.into(),
                    create_time: at(p.created),
                    active: p.active,
                };
                (user.id.clone(), user)
            })
            .collect();
        Self { state: Mutex::new(UsersV2 { by_id, next_id: FIRST_NEW_USER_ID }) }
    }
}

impl UsersV2 {
    /// ALREADY_EXISTS when a user has `email`.
    fn check_email_free(&self, email: &str) -> Result<(), Status> {
        match self.by_id.values().find(|u| u.email.eq_ignore_ascii_case(email)) {
            None => Ok(()),
            Some(owner) => {
                let message = format!("email {email} is already used by users/{}", owner.id);
                let detail = resource_info(USER_V2_TYPE, format!("users/{}", owner.id), message.clone());
                Err(rich_status(Code::AlreadyExists, message, vec![detail]))
            }
        }
    }
}

/// A given name is required; a family name may be empty (not everyone has
/// one), but neither may be longer than [`MAX_NAME_PART`].
fn check_name_part(v: &mut Violations, field: &str, name: &str, required: bool) {
    if required && name.trim().is_empty() {
        v.add(field, "must not be empty");
    } else if name.chars().count() > MAX_NAME_PART {
        v.add(field, format!("must be at most {MAX_NAME_PART} characters"));
    }
}

#[tonic::async_trait]
impl UserServiceV2 for UserDirectoryV2 {
    async fn get_user(&self, request: Request<users_v2::GetUserRequest>) -> Result<Response<users_v2::User>, Status> {
        let id = request.into_inner().id;
        let state = lock(&self.state);
        match state.by_id.get(&id) {
            Some(user) => Ok(Response::new(user.clone())),
            None => Err(not_found(USER_V2_TYPE, format!("users/{id}"))),
        }
    }

    async fn list_users(
        &self,
        request: Request<users_v2::ListUsersRequest>,
    ) -> Result<Response<users_v2::ListUsersResponse>, Status> {
        let req = request.into_inner();
        let mut v = Violations::default();
        let (page_size, after) = paging(req.page_size, &req.page_token, &mut v);
        v.into_result()?;

        let state = lock(&self.state);
        let start = after.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
        let mut matching = state.by_id.range::<str, _>((start, Bound::Unbounded)).map(|(_, u)| u);
        let page: Vec<users_v2::User> = matching.by_ref().take(page_size).cloned().collect();
        let next_page_token = match (matching.next(), page.last()) {
            (Some(_), Some(last)) => page_token(&last.id),
            _ => String::new(),
        };
        Ok(Response::new(users_v2::ListUsersResponse { users: page, next_page_token }))
    }

    async fn create_user(
        &self,
        request: Request<users_v2::CreateUserRequest>,
    ) -> Result<Response<users_v2::User>, Status> {
        let req = request.into_inner();
        let mut v = Violations::default();
        check_name_part(&mut v, "given_name", &req.given_name, true);
        check_name_part(&mut v, "family_name", &req.family_name, false);
        check_email(&mut v, "email", &req.email);
        let access_level = match users_v2::AccessLevel::try_from(req.access_level) {
            Ok(users_v2::AccessLevel::Unspecified) => Some(users_v2::AccessLevel::Viewer),
            Ok(level) => Some(level),
            Err(_) => {
                v.add("access_level", format!("unknown access level {}", req.access_level));
                None
            }
        };
        v.into_result()?;

        let mut state = lock(&self.state);
        state.check_email_free(&req.email)?;
        let id = state.next_id.to_string();
        state.next_id += 1;
        let user = users_v2::User {
            id: id.clone(),
            given_name: req.given_name.trim().to_owned(),
            family_name: req.family_name.trim().to_owned(),
            email: req.email,
            access_level: access_level.unwrap_or(users_v2::AccessLevel::Viewer).into(),
            create_time: Some(now()),
            active: true,
        };
        state.by_id.insert(id, user.clone());
        Ok(Response::new(user))
    }

    async fn search_users(
        &self,
        request: Request<users_v2::SearchUsersRequest>,
    ) -> Result<Response<users_v2::SearchUsersResponse>, Status> {
        let query = request.into_inner().query;
        let needle = query.trim().to_lowercase();
        if needle.is_empty() {
            return Err(invalid("query", "must not be empty"));
        }
        if needle.chars().count() > MAX_QUERY {
            return Err(invalid("query", &format!("must be at most {MAX_QUERY} characters")));
        }
        let state = lock(&self.state);
        let users = state
            .by_id
            .values()
            .filter(|u| {
                [&u.given_name, &u.family_name, &u.email].iter().any(|field| field.to_lowercase().contains(&needle))
            })
            .cloned()
            .collect();
        Ok(Response::new(users_v2::SearchUsersResponse { users }))
    }
}

// ---------------------------------------------------------------------------
// acme.orders.v1.OrderService

const ORDER_TYPE: &str = "acme.orders.v1.Order";
const ORDER_SERVICE: &str = "acme.orders.v1.OrderService";
const DEFAULT_CURRENCY: &str = "USD";

/// Events a watch sends when nothing else is asked for, and the most it
/// sends.
const DEFAULT_WATCH_LIMIT: i32 = 5;
const MAX_WATCH_LIMIT: i32 = 100;
/// The pause between history events unless `interval_ms` says otherwise:
/// slow enough to see lines arrive one by one in a terminal.
const DEFAULT_WATCH_INTERVAL: Duration = Duration::from_millis(300);
const MAX_WATCH_INTERVAL_MS: i32 = 10_000;
/// Orders placed while watches are open, per watch, before a slow one is
/// told it fell behind.
const LIVE_EVENT_BUFFER: usize = 64;

struct OrderBook {
    /// Shared with the Track streams, which read it after the call that
    /// started them has returned.
    state: Arc<Mutex<Orders>>,
    /// Every order placed, for the open watches; sent under the `state`
    /// lock, so a watch that subscribes under it sees each order exactly
    /// once: in its history or live.
    placed: broadcast::Sender<orders::Order>,
}

struct Orders {
    by_id: HashMap<String, orders::Order>,
    next_id: u64,
}

/// An [`orders::OrderEvent`] before the watch numbers it.
struct Event {
    r#type: orders::OrderEventType,
    order_id: String,
    status: orders::OrderStatus,
}

impl Event {
    fn new(r#type: orders::OrderEventType, order_id: &str, status: orders::OrderStatus) -> Self {
        Self { r#type, order_id: order_id.to_owned(), status }
    }

    fn created(order: &orders::Order) -> Self {
        Self::new(orders::OrderEventType::Created, &order.id, orders::OrderStatus::Pending)
    }
}

/// How `order` got to its status: CREATED (as PENDING), then one
/// STATUS_CHANGED per step of PENDING → PAID → SHIPPED, or straight to
/// CANCELLED. The store keeps no history; this is the one path each
/// status implies.
fn history(order: &orders::Order) -> Vec<Event> {
    use orders::OrderStatus::{Cancelled, Paid, Shipped};
    let steps: &[orders::OrderStatus] = match order.status() {
        Paid => &[Paid],
        Shipped => &[Paid, Shipped],
        Cancelled => &[Cancelled],
        _ => &[],
    };
    std::iter::once(Event::created(order))
        .chain(steps.iter().map(|&status| Event::new(orders::OrderEventType::StatusChanged, &order.id, status)))
        .collect()
}

/// One open WatchOrders call: the history still to send, then the orders
/// placed for `user_id` as they come.
struct Watch {
    user_id: String,
    history: VecDeque<Event>,
    live: broadcast::Receiver<orders::Order>,
    interval: Duration,
    sent: i32,
    limit: i32,
}

impl Watch {
    /// The next event, `None` once `limit` are sent (or the service is
    /// gone). History events are paced by `interval`; live ones go out as
    /// soon as the order is placed.
    async fn next(&mut self) -> Option<Result<orders::OrderEvent, Status>> {
        if self.sent >= self.limit {
            return None;
        }
        let event = match self.history.pop_front() {
            Some(event) => {
                if self.sent > 0 {
                    tokio::time::sleep(self.interval).await;
                }
                event
            }
            None => loop {
                match self.live.recv().await {
                    Ok(order) if order.user_id == self.user_id => break Event::created(&order),
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        self.limit = self.sent;
                        let message = format!("the watch fell {missed} orders behind; start a new one");
                        return Some(Err(Status::new(Code::Aborted, message)));
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            },
        };
        self.sent += 1;
        Some(Ok(orders::OrderEvent {
            sequence: self.sent,
            r#type: event.r#type.into(),
            order_id: event.order_id,
            status: event.status.into(),
        }))
    }

    fn into_stream(self) -> impl Stream<Item = Result<orders::OrderEvent, Status>> + Send + 'static {
        stream::unfold(self, |mut watch| async move {
            let event = watch.next().await?;
            Some((event, watch))
        })
    }
}

/// `limit` and `interval_ms` of a WatchOrdersRequest, 0 meaning the
/// default; a negative value or a pause over the maximum is a violation.
fn watch_pace(req: &orders::WatchOrdersRequest, v: &mut Violations) -> (i32, Duration) {
    let limit = match req.limit {
        0 => DEFAULT_WATCH_LIMIT,
        n if n < 0 => {
            v.add("limit", "must not be negative");
            0
        }
        n => n.min(MAX_WATCH_LIMIT),
    };
    let interval = match u64::try_from(req.interval_ms) {
        Ok(0) => DEFAULT_WATCH_INTERVAL,
        Ok(ms) if req.interval_ms <= MAX_WATCH_INTERVAL_MS => Duration::from_millis(ms),
        _ => {
            v.add("interval_ms", format!("must be between 0 and {MAX_WATCH_INTERVAL_MS}"));
            Duration::ZERO
        }
    };
    (limit, interval)
}

/// A Track answer: the order's current state, NOT_FOUND for an unknown one.
fn track_update(state: &Mutex<Orders>, request: &orders::TrackRequest) -> Result<orders::TrackUpdate, Status> {
    if request.order_id.is_empty() {
        return Err(invalid("order_id", "is required"));
    }
    let state = lock(state);
    let order = state
        .by_id
        .get(&request.order_id)
        .ok_or_else(|| not_found(ORDER_TYPE, format!("orders/{}", request.order_id)))?;
    Ok(orders::TrackUpdate {
        order_id: order.id.clone(),
        status: order.status,
        total_cents: order.total_cents,
        currency_code: order.currency_code.clone(),
    })
}

fn line(sku: &str, quantity: i32, unit_price_cents: i64) -> orders::LineItem {
    orders::LineItem { sku: sku.into(), quantity, unit_price_cents }
}

/// Σ quantity × unit price; `None` on overflow.
fn total_cents(items: &[orders::LineItem]) -> Option<i64> {
    items
        .iter()
        .try_fold(0i64, |sum, item| sum.checked_add(i64::from(item.quantity).checked_mul(item.unit_price_cents)?))
}

impl OrderBook {
    fn seeded() -> Self {
        let seed = [
            (
                "5001",
                "1001",
                orders::OrderStatus::Shipped,
                1_706_100_000,
                vec![line("BOOK-001", 1, 2_999), line("PEN-010", 3, 450)],
            ),
            ("5002", "1001", orders::OrderStatus::Paid, 1_707_300_000, vec![line("LAMP-200", 1, 8_900)]),
            ("5003", "1002", orders::OrderStatus::Pending, 1_707_400_000, vec![line("MUG-042", 2, 1_250)]),
        ];
        let by_id = seed
            .into_iter()
            .map(|(id, user_id, status, created, items)| {
                let order = orders::Order {
                    id: id.into(),
                    user_id: user_id.into(),
                    total_cents: total_cents(&items).unwrap_or_default(),
                    items,
                    status: status.into(),
                    currency_code: DEFAULT_CURRENCY.into(),
                    create_time: at(created),
                };
                (order.id.clone(), order)
            })
            .collect();
        let (placed, _) = broadcast::channel(LIVE_EVENT_BUFFER);
        Self { state: Arc::new(Mutex::new(Orders { by_id, next_id: 5004 })), placed }
    }
}

/// The stream types of OrderService's streaming methods.
type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl OrderService for OrderBook {
    type WatchOrdersStream = BoxStream<orders::OrderEvent>;
    type TrackStream = BoxStream<orders::TrackUpdate>;

    async fn get_order(&self, request: Request<orders::GetOrderRequest>) -> Result<Response<orders::Order>, Status> {
        let id = request.into_inner().id;
        let state = lock(&self.state);
        match state.by_id.get(&id) {
            Some(order) => Ok(Response::new(order.clone())),
            None => Err(not_found(ORDER_TYPE, format!("orders/{id}"))),
        }
    }

    async fn list_orders(
        &self,
        request: Request<orders::ListOrdersRequest>,
    ) -> Result<Response<orders::ListOrdersResponse>, Status> {
        let req = request.into_inner();
        if req.user_id.is_empty() {
            return Err(invalid("user_id", "is required"));
        }
        let Ok(status) = orders::OrderStatus::try_from(req.status) else {
            return Err(invalid("status", &format!("unknown order status {}", req.status)));
        };
        let state = lock(&self.state);
        let mut found: Vec<orders::Order> = state
            .by_id
            .values()
            .filter(|o| {
                o.user_id == req.user_id && (status == orders::OrderStatus::Unspecified || o.status == status as i32)
            })
            .cloned()
            .collect();
        drop(state);
        let key = |o: &orders::Order| (o.create_time.map(|t| (t.seconds, t.nanos)), o.id.clone());
        found.sort_by_key(|o| std::cmp::Reverse(key(o)));
        Ok(Response::new(orders::ListOrdersResponse { orders: found }))
    }

    async fn create_order(
        &self,
        request: Request<orders::CreateOrderRequest>,
    ) -> Result<Response<orders::Order>, Status> {
        let req = request.into_inner();
        let mut v = Violations::default();
        if req.user_id.is_empty() {
            v.add("user_id", "is required");
        }
        if req.items.is_empty() {
            v.add("items", "must contain at least one line item");
        }
        for (i, item) in req.items.iter().enumerate() {
            if item.sku.trim().is_empty() {
                v.add(format!("items[{i}].sku"), "must not be empty");
            }
            if item.quantity <= 0 {
                v.add(format!("items[{i}].quantity"), "must be positive");
            }
            if item.unit_price_cents < 0 {
                v.add(format!("items[{i}].unit_price_cents"), "must not be negative");
            }
        }
        let currency_code = if req.currency_code.is_empty() { DEFAULT_CURRENCY.to_owned() } else { req.currency_code };
        if currency_code.len() != 3 || !currency_code.bytes().all(|b| b.is_ascii_uppercase()) {
            v.add("currency_code", "must be an ISO 4217 code such as USD");
        }
        let total = total_cents(&req.items);
        if total.is_none() {
            v.add("items", "order total does not fit in int64 cents");
        }
        v.into_result()?;

        let mut state = lock(&self.state);
        let id = state.next_id.to_string();
        state.next_id += 1;
        let order = orders::Order {
            id: id.clone(),
            user_id: req.user_id,
            items: req.items,
            status: orders::OrderStatus::Pending.into(),
            total_cents: total.unwrap_or_default(),
            currency_code,
            create_time: Some(now()),
        };
        state.by_id.insert(id, order.clone());
        // No receiver (no open watch) is not an error.
        let _ = self.placed.send(order.clone());
        Ok(Response::new(order))
    }

    async fn watch_orders(
        &self,
        request: Request<orders::WatchOrdersRequest>,
    ) -> Result<Response<Self::WatchOrdersStream>, Status> {
        let req = request.into_inner();
        let mut v = Violations::default();
        if req.user_id.is_empty() {
            v.add("user_id", "is required");
        }
        let (limit, interval) = watch_pace(&req, &mut v);
        v.into_result()?;

        let state = lock(&self.state);
        let mut theirs: Vec<&orders::Order> = state.by_id.values().filter(|o| o.user_id == req.user_id).collect();
        // This service keeps no users: one is known when seeded or when it
        // has placed an order.
        if theirs.is_empty() && !PEOPLE.iter().any(|p| p.id == req.user_id) {
            return Err(not_found(USER_TYPE, format!("users/{}", req.user_id)));
        }
        theirs.sort_by_key(|o| (o.create_time.map(|t| (t.seconds, t.nanos)), o.id.clone()));
        let watch = Watch {
            history: theirs.into_iter().flat_map(history).collect(),
            live: self.placed.subscribe(),
            user_id: req.user_id,
            interval,
            sent: 0,
            limit,
        };
        drop(state);
        Ok(Response::new(Box::pin(watch.into_stream())))
    }

    async fn track(
        &self,
        request: Request<Streaming<orders::TrackRequest>>,
    ) -> Result<Response<Self::TrackStream>, Status> {
        let state = Arc::clone(&self.state);
        // tonic ends the call with the first error an answer stream yields,
        // so an unknown order (or a broken request stream) is the last word.
        let updates = request.into_inner().map(move |request| track_update(&state, &request?));
        Ok(Response::new(Box::pin(updates)))
    }

    async fn ping(&self, request: Request<orders::PingRequest>) -> Result<Response<orders::PingResponse>, Status> {
        let message = request.into_inner().message;
        Ok(Response::new(orders::PingResponse { message, service: ORDER_SERVICE.into() }))
    }
}
