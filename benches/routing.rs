//! Route lookup cost against table size: the design asks for a lookup that
//! does not grow with the number of routes (10 000 routes ≈ 10).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use http::Method;
use protogate::routing::{Match, PathTemplate, RouteTable, RouteTableBuilder};
use std::hint::black_box;

/// `n` routes in groups of five shapes per service: literal-only, a single
/// variable, a verb, a multi-segment variable, and a POST.
fn table(n: usize) -> RouteTable<usize> {
    let mut builder = RouteTableBuilder::new();
    for i in 0..n {
        let service = i / 5;
        let (method, text) = match i % 5 {
            0 => (Method::GET, format!("/v1/service{service}/status/live")),
            1 => (Method::GET, format!("/v1/service{service}/users/{{id}}")),
            2 => (Method::POST, format!("/v1/service{service}/users/{{id}}:cancel")),
            3 => (Method::GET, format!("/v1/service{service}/{{name=shelves/*/books/**}}")),
            _ => (Method::POST, format!("/v1/service{service}/users")),
        };
        let template = PathTemplate::parse(&text).expect("bench templates are valid");
        if builder.insert(method, template, i).is_err() {
            panic!("bench routes must not collide: {text}");
        }
    }
    builder.build()
}

fn lookups(c: &mut Criterion) {
    let mut group = c.benchmark_group("find");
    for n in [10, 1_000, 10_000] {
        let table = table(n);
        // A service in the middle of the table.
        let service = n / 10;
        let cases = [
            ("literal", Method::GET, format!("/v1/service{service}/status/live")),
            ("variable", Method::GET, format!("/v1/service{service}/shelves/s%201/books/a/b")),
            ("verb", Method::POST, format!("/v1/service{service}/users/42:cancel")),
            ("miss", Method::GET, format!("/v1/service{service}/nothing/here")),
        ];
        for (name, method, path) in &cases {
            // Guard against benchmarking a lookup that silently fails.
            let found = matches!(table.find(method, path), Match::Found { .. });
            assert_eq!(found, *name != "miss", "{name} {path}");
            group.bench_with_input(BenchmarkId::new(*name, n), path, |b, path| {
                b.iter(|| table.find(black_box(method), black_box(path)))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, lookups);
criterion_main!(benches);
