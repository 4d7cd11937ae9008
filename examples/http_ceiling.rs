//! The HTTP ceiling for mica's overhead measurement: an actix-web server that answers
//! KServe v2 metadata and infer requests at once, with no batching, scheduling or
//! engine behind it. `scripts/http-overhead.sh` loads it and `mica serve` (null
//! engine) the same way and compares.
//!
//! `cargo run --release --example http_ceiling -- 127.0.0.1:18100`

use actix_web::{web, App, HttpResponse, HttpServer};

const METADATA: &str = r#"{"name":"null","versions":["1"],"platform":"ceiling","inputs":[{"name":"input","datatype":"FP32","shape":[-1,4]}],"outputs":[{"name":"output","datatype":"FP32","shape":[-1,4]}]}"#;

async fn metadata() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(METADATA)
}

async fn infer(body: web::Bytes) -> HttpResponse {
    // Read the body as a server must, answer a fixed one-image output.
    let _ = body.len();
    HttpResponse::Ok().content_type("application/json").body(
        r#"{"model_name":"null","model_version":"1","outputs":[{"name":"output","datatype":"FP32","shape":[1,4],"data":[0.0,0.0,0.0,0.0]}]}"#,
    )
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18100".to_string());
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    HttpServer::new(|| {
        App::new()
            .route("/v2/models/{model}", web::get().to(metadata))
            .route("/v2/models/{model}/infer", web::post().to(infer))
    })
    .workers(workers)
    .bind(address)?
    .run()
    .await
}
