//! The yardstick of the GET target of issue 13: a bare axum handler that
//! answers `GET /v1/kv/{key}` with the same bytes a node returns for a
//! decided 256 B value (and `PUT` with 201, so that `paxos-kv bench --mode
//! get` can write its keys first), on the same runtime and allocator as the
//! server, with no state, storage, metrics or checks.
//! `cargo run --release --example bare_axum -- 127.0.0.1:7490`, then
//! `paxos-kv bench --mode get --url http://127.0.0.1:7490`.
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

static VALUE: [u8; 256] = [7u8; 256];

#[tokio::main]
async fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7490".into());
    let app = Router::new().route(
        "/v1/kv/{*key}",
        get(|| async {
            (
                StatusCode::OK,
                [(CONTENT_TYPE, "application/octet-stream")],
                axum::body::Bytes::from_static(&VALUE),
            )
                .into_response()
        })
        .put(|| async {
            (
                StatusCode::CREATED,
                axum::Json(serde_json::json!({ "key": "k", "created": true })),
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
    axum::serve(listener, app).await.expect("serve");
}
