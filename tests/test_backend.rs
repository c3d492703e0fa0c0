//! The conformance backend itself, called over real gRPC with the generated
//! tonic client: if these fail, a gateway test failing against the backend
//! says nothing about the gateway.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::pb::google::api::HttpBody;
use common::pb::google::rpc;
use common::testpb::test_service_client::TestServiceClient;
use common::testpb::{
    AllTypes, Collected, Color, CustomDetail, DownloadRequest, FailRequest, Item, MetadataRequest, MetadataResponse,
    Nested, SleepRequest, StreamRequest, StreamStatsResponse, UploadFieldRequest, UploadStats,
};
use common::{fixtures, Backend};
use prost::Message as _;
use prost_reflect::{DescriptorPool, Value};
use tonic::transport::Channel;
use tonic::{Code, Request};

async fn connect(backend: &Backend) -> TestServiceClient<Channel> {
    TestServiceClient::connect(backend.url()).await.expect("connect to backend")
}

fn sample() -> AllTypes {
    AllTypes {
        double_value: 1.5,
        float_value: -2.25,
        int32_value: -7,
        int64_value: i64::MIN,
        uint64_value: u64::MAX,
        sint64_value: -99,
        fixed32_value: 42,
        sfixed64_value: -42,
        bool_value: true,
        string_value: "héllo/wörld".into(),
        bytes_value: vec![0, 1, 254, 255],
        color: Color::Green as i32,
        nested: Some(Nested {
            name: "outer".into(),
            values: vec![1, 2, 3],
            child: Some(Box::new(Nested { name: "inner".into(), ..Nested::default() })),
        }),
        repeated_string: vec!["a".into(), "b".into()],
        repeated_color: vec![Color::Red as i32, Color::Green as i32],
        map_int64_string: HashMap::from([(-1, "minus one".into())]),
        map_bool_string: HashMap::from([(true, "yes".into()), (false, "no".into())]),
        choice: Some(common::testpb::all_types::Choice::Number(0)),
        renamed: "custom".into(),
        optional_int32: Some(0),
        timestamp: Some(prost_types::Timestamp { seconds: 1_700_000_000, nanos: 5 }),
        any: Some(prost_types::Any {
            type_url: "type.googleapis.com/protogate.test.v1.Nested".into(),
            value: Nested { name: "packed".into(), ..Nested::default() }.encode_to_vec(),
        }),
        empty: Some(()),
        int64_wrapper: Some(0),
        bytes_wrapper: Some(vec![9]),
        ..AllTypes::default()
    }
}

#[tokio::test]
async fn every_echo_method_returns_its_request_unchanged() {
    let backend = Backend::test_service().await;
    let mut client = connect(&backend).await;
    let sent = sample();

    let answers = [
        client.echo(sent.clone()).await,
        client.echo_query(sent.clone()).await,
        client.echo_path(sent.clone()).await,
        client.echo_verb(sent.clone()).await,
        client.echo_body_field(sent.clone()).await,
        client.echo_response_field(sent.clone()).await,
        client.unannotated(sent.clone()).await,
    ];
    for answer in answers {
        assert_eq!(answer.expect("echo succeeds").into_inner(), sent);
    }
    backend.shutdown().await;
}

#[tokio::test]
async fn fail_carries_the_requested_status_and_three_details() {
    let backend = Backend::test_service().await;
    let mut client = connect(&backend).await;

    let status = client
        .fail(FailRequest { code: Code::FailedPrecondition as i32, message: "not today".into(), with_details: true })
        .await
        .expect_err("fail fails");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(status.message(), "not today");

    let details = rpc::Status::decode(status.details()).expect("grpc-status-details-bin decodes");
    assert_eq!(details.code, Code::FailedPrecondition as i32);
    assert_eq!(details.message, "not today");
    let type_urls: Vec<&str> = details.details.iter().map(|a| a.type_url.as_str()).collect();
    assert_eq!(
        type_urls,
        [
            "type.googleapis.com/google.rpc.ErrorInfo",
            "type.googleapis.com/google.rpc.BadRequest",
            "type.googleapis.com/protogate.test.v1.CustomDetail",
        ]
    );
    let info = rpc::ErrorInfo::decode(details.details[0].value.as_slice()).expect("ErrorInfo");
    assert_eq!(info.reason, "TEST_REASON");
    assert_eq!(info.domain, "test.protogate");
    assert_eq!(info.metadata.get("k").map(String::as_str), Some("v"));
    let bad = rpc::BadRequest::decode(details.details[1].value.as_slice()).expect("BadRequest");
    assert_eq!(bad.field_violations.len(), 1);
    assert!(!bad.field_violations[0].field.is_empty());
    let custom = CustomDetail::decode(details.details[2].value.as_slice()).expect("CustomDetail");
    assert!(!custom.note.is_empty());
    backend.shutdown().await;
}

#[tokio::test]
async fn fail_without_details_and_with_code_zero() {
    let backend = Backend::test_service().await;
    let mut client = connect(&backend).await;

    let status = client
        .fail(FailRequest { code: Code::NotFound as i32, message: "nope".into(), with_details: false })
        .await
        .expect_err("fail fails");
    assert_eq!(status.code(), Code::NotFound);
    assert!(status.details().is_empty());

    client.fail(FailRequest::default()).await.expect("code 0 succeeds");
    backend.shutdown().await;
}

#[tokio::test]
async fn metadata_reports_request_metadata_and_answers_with_headers_and_a_trailer() {
    let backend = Backend::test_service().await;
    let channel = Channel::from_shared(backend.url()).expect("uri").connect().await.expect("connect");

    let mut request = Request::new(MetadataRequest {});
    request.metadata_mut().insert("x-custom", "abc".parse().expect("ascii value"));
    request.metadata_mut().insert_bin("x-data-bin", tonic::metadata::MetadataValue::from_bytes(b"\xffraw"));

    // Called as server streaming (identical on the wire to unary) because
    // the unary client merges trailers into the header metadata; this way
    // headers and trailers are seen apart.
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let response = grpc
        .server_streaming(
            request,
            http::uri::PathAndQuery::from_static("/protogate.test.v1.TestService/Metadata"),
            tonic_prost::ProstCodec::<MetadataRequest, MetadataResponse>::default(),
        )
        .await
        .expect("metadata succeeds");

    let headers = response.metadata().clone();
    assert_eq!(headers.get("x-echo-header").map(|v| v.to_str().expect("ascii")), Some("hello"));
    let bin = headers.get_bin("x-echo-bin").expect("x-echo-bin header").to_bytes().expect("base64");
    assert_eq!(bin.as_ref(), [0x01, 0x02]);
    assert!(headers.get("x-echo-trailer").is_none(), "trailer sent as header");

    let mut stream = response.into_inner();
    let reported = stream.message().await.expect("message").expect("one message").headers;
    assert_eq!(reported.get("x-custom").map(String::as_str), Some("abc"));
    // Binary metadata is reported in its wire form (unpadded base64).
    assert_eq!(reported.get("x-data-bin").map(String::as_str), Some("/3Jhdw"));
    assert!(stream.message().await.expect("end").is_none());

    let trailers = stream.trailers().await.expect("trailers").expect("trailers present");
    assert_eq!(trailers.get("x-echo-trailer").map(|v| v.to_str().expect("ascii")), Some("bye"));
    backend.shutdown().await;
}

#[tokio::test]
async fn count_counts_every_call_but_its_own() {
    let backend = Backend::test_service().await;
    let mut client = connect(&backend).await;

    let before = client.count(()).await.expect("count").into_inner().calls;
    assert_eq!(before, 0);
    client.echo(AllTypes::default()).await.expect("echo");
    let _ = client.fail(FailRequest { code: 3, ..FailRequest::default() }).await;
    let after = client.count(()).await.expect("count").into_inner().calls;
    assert_eq!(after, before + 2);
    assert_eq!(backend.calls(), 2);
    backend.shutdown().await;
}

#[tokio::test]
async fn sleep_reports_the_grpc_timeout_it_saw() {
    let backend = Backend::test_service().await;
    let mut client = connect(&backend).await;

    let mut request = Request::new(SleepRequest { millis: 1 });
    request.set_timeout(Duration::from_secs(30));
    let response = client.sleep(request).await.expect("sleep");
    let seen =
        response.metadata().get("x-seen-grpc-timeout").expect("grpc-timeout seen").to_str().expect("ascii").to_owned();
    assert!(seen.ends_with(['H', 'M', 'S', 'm', 'u', 'n']), "not a grpc-timeout: {seen}");

    let response = client.sleep(SleepRequest { millis: 0 }).await.expect("sleep");
    assert!(response.metadata().get("x-seen-grpc-timeout").is_none());
    backend.shutdown().await;
}

#[tokio::test]
async fn http_body_methods_carry_bytes_and_content_type() {
    let backend = Backend::test_service().await;
    let mut client = connect(&backend).await;

    let upload =
        HttpBody { content_type: "application/octet-stream".into(), data: (0..=255).collect(), extensions: Vec::new() };
    let echoed = client.upload(upload.clone()).await.expect("upload").into_inner();
    assert_eq!(echoed, upload);

    let plain = client
        .download(DownloadRequest { name: "a.txt".into(), content_type: String::new() })
        .await
        .expect("download")
        .into_inner();
    assert_eq!(plain.content_type, "text/plain");
    assert_eq!(plain.data, b"contents of a.txt");
    let csv = client
        .download(DownloadRequest { name: "b".into(), content_type: "text/csv".into() })
        .await
        .expect("download")
        .into_inner();
    assert_eq!(csv.content_type, "text/csv");

    let summary = client
        .upload_field(UploadFieldRequest {
            name: "pic".into(),
            file: Some(HttpBody { content_type: "image/png".into(), data: vec![7; 1000], extensions: Vec::new() }),
        })
        .await
        .expect("upload field")
        .into_inner();
    assert_eq!(summary.name, "pic");
    assert_eq!(summary.content_type, "image/png");
    assert_eq!(summary.size, 1000);
    backend.shutdown().await;
}

/// The gateway reads routes from the descriptor set it is given, so the
/// annotations must survive build.rs and the harness's filtering.
#[test]
fn test_descriptor_set_keeps_http_annotations_and_only_the_test_closure() {
    let pool = DescriptorPool::decode(fixtures::test_service_descriptor_set().as_slice()).expect("test set decodes");
    let names: Vec<String> = pool.files().map(|f| f.name().to_owned()).collect();
    assert!(names.iter().any(|n| n == fixtures::TEST_PROTO));
    assert!(
        names.iter().all(|n| n.starts_with("google/") || *n == fixtures::TEST_PROTO),
        "unrelated files in the test set: {names:?}"
    );

    let http = pool.get_extension_by_name("google.api.http").expect("google.api.http known");
    let service = pool.get_service_by_name("protogate.test.v1.TestService").expect("service");
    let method = |name: &str| service.methods().find(|m| m.name() == name).unwrap_or_else(|| panic!("method {name}"));

    let echo = method("Echo").options();
    assert!(echo.has_extension(&http));
    let rule = echo.get_extension(&http);
    let rule = rule.as_message().expect("HttpRule");
    assert_eq!(rule.get_field_by_name("post").as_deref(), Some(&Value::String("/test/echo".into())));

    let path = method("EchoPath").options();
    let rule = path.get_extension(&http);
    let additional =
        rule.as_message().expect("HttpRule").get_field_by_name("additional_bindings").expect("additional_bindings");
    assert_eq!(additional.as_list().map(<[Value]>::len), Some(2));

    assert!(!method("Unannotated").options().has_extension(&http));
}

/// Every message of a server stream, and the status that ended it.
async fn drain<T>(stream: &mut tonic::Streaming<T>) -> (Vec<T>, Result<(), tonic::Status>) {
    let mut messages = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.message()).await.expect("a message within 10 s") {
            Ok(Some(message)) => messages.push(message),
            Ok(None) => return (messages, Ok(())),
            Err(status) => return (messages, Err(status)),
        }
    }
}

#[tokio::test]
async fn stream_items_sends_numbered_items_and_fails_where_asked() {
    let backend = Backend::test_service().await;
    let mut client = connect(&backend).await;

    let request = StreamRequest { count: 3, tag: "t".into(), payload_size: 5, ..StreamRequest::default() };
    let (items, end) = drain(&mut client.stream_items(request).await.expect("stream").into_inner()).await;
    end.expect("a clean end");
    let expected: Vec<Item> = (0..3)
        .map(|i| Item {
            index: i,
            name: format!("item-{i}"),
            tag: "t".into(),
            payload: "xxxxx".into(),
            ..Item::default()
        })
        .collect();
    assert_eq!(items, expected);

    let failing = |fail_after, interval_ms| StreamRequest {
        count: 3,
        fail_code: Code::FailedPrecondition as i32,
        fail_message: "stop".into(),
        fail_after,
        interval_ms,
        ..StreamRequest::default()
    };
    // Before the first message: the call itself fails (trailers-only)...
    let status = client.stream_items(failing(0, 0)).await.expect_err("fails at once");
    assert_eq!((status.code(), status.message()), (Code::FailedPrecondition, "stop"));
    // ...or, with an interval, after the response headers.
    let mut stream = client.stream_items(failing(0, 10)).await.expect("headers first").into_inner();
    let (items, end) = drain(&mut stream).await;
    assert!(items.is_empty(), "{items:?}");
    assert_eq!(end.expect_err("fails").code(), Code::FailedPrecondition);
    // After two messages; past `count`, after the last.
    for (fail_after, sent) in [(2, 2), (7, 3)] {
        let mut stream = client.stream_items(failing(fail_after, 0)).await.expect("stream").into_inner();
        let (items, end) = drain(&mut stream).await;
        assert_eq!(items.len(), sent, "fail_after {fail_after}");
        assert_eq!(end.expect_err("fails").code(), Code::FailedPrecondition, "fail_after {fail_after}");
    }
    let stats = backend.stream_stats().await;
    assert_eq!(
        stats,
        StreamStatsResponse { started: 5, cancelled: 0, completed: 5, sent: 3 + 2 + 3, received: 0 },
        "{stats:?}"
    );
    // StreamStats is no call of its own.
    assert_eq!(backend.calls(), 5);
    backend.shutdown().await;
}

#[tokio::test]
async fn a_held_stream_stays_open_until_the_client_goes_away() {
    let backend = Backend::test_service().await;
    let mut client = connect(&backend).await;

    let request = StreamRequest { count: 1, hold: true, ..StreamRequest::default() };
    let mut stream = client.stream_items(request).await.expect("stream").into_inner();
    let first = stream.message().await.expect("message").expect("one message");
    assert_eq!(first.name, "item-0");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), stream.message()).await.is_err(),
        "a held stream ended or sent more"
    );
    drop(stream);
    let stats = backend.stream_stats_until("the held call is cancelled", |s| s.cancelled == 1).await;
    assert_eq!((stats.started, stats.completed, stats.sent), (1, 0, 1), "{stats:?}");

    // Given as it is pulled: a stream 200 ms apart has sent one message
    // when the first arrives.
    let request = StreamRequest { count: 3, interval_ms: 200, ..StreamRequest::default() };
    let mut stream = client.stream_items(request).await.expect("stream").into_inner();
    stream.message().await.expect("message").expect("a first message");
    assert!(backend.stream_stats().await.sent < 1 + 3, "made ahead of the pull");
    let (rest, end) = drain(&mut stream).await;
    end.expect("a clean end");
    assert_eq!(rest.len(), 2);
    backend.shutdown().await;
}

#[tokio::test]
async fn wrapped_and_download_streams() {
    let backend = Backend::test_service().await;
    let mut client = connect(&backend).await;

    let request = StreamRequest { count: 2, tag: "w".into(), ..StreamRequest::default() };
    let (wrapped, end) = drain(&mut client.stream_wrapped(request).await.expect("stream").into_inner()).await;
    end.expect("a clean end");
    assert_eq!(wrapped.len(), 2);
    let item = wrapped[1].item.clone().expect("an item");
    assert_eq!((item.index, item.name.as_str(), item.tag.as_str()), (1, "item-1", "w"));
    assert!(!wrapped[1].ignored.is_empty());

    for (tag, content_type) in [("", "text/plain"), ("text/csv", "text/csv")] {
        let request = StreamRequest { count: 2, tag: tag.into(), ..StreamRequest::default() };
        let (chunks, end) = drain(&mut client.stream_download(request).await.expect("stream").into_inner()).await;
        end.expect("a clean end");
        let data: Vec<&[u8]> = chunks.iter().map(|c| c.data.as_slice()).collect();
        assert_eq!(data, [&b"chunk-0\n"[..], b"chunk-1\n"]);
        assert!(chunks.iter().all(|c| c.content_type == content_type), "{chunks:?}");
    }
    backend.shutdown().await;
}

#[tokio::test]
async fn client_streams_report_what_they_received() {
    let backend = Backend::test_service().await;
    let mut client = connect(&backend).await;

    let items = |names: &[&str]| {
        let items: Vec<Item> =
            names.iter().map(|n| Item { name: (*n).into(), tag: format!("tag-{n}"), ..Item::default() }).collect();
        futures_util::stream::iter(items)
    };
    let collected = client.collect(items(&["a", "b"])).await.expect("collect").into_inner();
    assert_eq!(
        collected,
        Collected { count: 2, names: vec!["a".into(), "b".into()], tags: vec!["tag-a".into(), "tag-b".into()] }
    );
    let failing = futures_util::stream::iter(vec![
        Item { name: "a".into(), ..Item::default() },
        Item { fail_code: Code::Aborted as i32, fail_message: "no".into(), ..Item::default() },
    ]);
    let status = client.collect(failing).await.expect_err("fails");
    assert_eq!((status.code(), status.message()), (Code::Aborted, "no"));

    let chunks = futures_util::stream::iter(vec![
        HttpBody { content_type: "image/png".into(), data: vec![1; 10], extensions: Vec::new() },
        HttpBody { content_type: "other".into(), data: vec![2; 5], extensions: Vec::new() },
    ]);
    let stats = client.upload_stream(chunks).await.expect("upload").into_inner();
    assert_eq!(stats, UploadStats { size: 15, chunks: 2, content_type: "image/png".into() });

    let (answers, end) = drain(&mut client.chat(items(&["x", "y", "z"])).await.expect("chat").into_inner()).await;
    end.expect("a clean end");
    let indexes: Vec<(i32, &str)> = answers.iter().map(|a| (a.index, a.name.as_str())).collect();
    assert_eq!(indexes, [(0, "x"), (1, "y"), (2, "z")]);

    let stats = backend.stream_stats().await;
    assert_eq!(
        stats,
        StreamStatsResponse { started: 4, cancelled: 0, completed: 4, sent: 3, received: 2 + 2 + 2 + 3 },
        "{stats:?}"
    );
    backend.shutdown().await;
}

#[tokio::test]
async fn a_client_stream_given_up_midway_counts_as_cancelled_and_a_finished_one_does_not() {
    let backend = Backend::test_service().await;
    let client = connect(&backend).await;

    // The request stream stays open (its sender lives) while the call is
    // dropped: the client resets the stream.
    for finish in [false, true] {
        let before = backend.stream_stats().await;
        let (tx, rx) = tokio::sync::mpsc::channel::<Item>(4);
        let requests = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
        let mut call_client = client.clone();
        let call = tokio::spawn(async move { call_client.collect(requests).await });
        tx.send(Item { name: "a".into(), ..Item::default() }).await.expect("send");
        backend.stream_stats_until("the first message arrives", |s| s.received == before.received + 1).await;
        if finish {
            drop(tx);
            let collected = call.await.expect("call task").expect("collect").into_inner();
            assert_eq!(collected.names, ["a"]);
            let stats = backend.stream_stats().await;
            assert_eq!((stats.completed, stats.cancelled), (before.completed + 1, before.cancelled), "{stats:?}");
        } else {
            call.abort();
            let stats =
                backend.stream_stats_until("the call is cancelled", |s| s.cancelled == before.cancelled + 1).await;
            assert_eq!(stats.completed, before.completed, "{stats:?}");
            drop(tx);
        }
    }
    backend.shutdown().await;
}
