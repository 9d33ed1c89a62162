//! A real HTTP receiver for webhook notifications: records what arrives, answers with scripted
//! statuses, and checks signatures independently of the cloud's code.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// What the receiver got: when it arrived, headers of interest and the raw body.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: chrono::DateTime<chrono::Utc>,
    pub event: String,
    pub delivery: String,
    pub timestamp: String,
    pub signature: String,
    /// The W3C trace context the cloud sent, empty without one.
    pub traceparent: String,
    pub body: Vec<u8>,
}

#[derive(Clone, Default)]
pub struct Receiver {
    pub received: Arc<Mutex<Vec<Received>>>,
    /// Statuses to answer with, in order; 200 once empty.
    pub script: Arc<Mutex<VecDeque<u16>>>,
}

impl Receiver {
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().expect("lock").clone()
    }

    /// The first alert-opened delivery, waited for up to `within`.
    pub async fn opened(&self, within: std::time::Duration) -> Received {
        super::eventually(
            within,
            "the webhook delivery of an opened alert",
            || async { self.received().into_iter().find(|r| r.event == "open") },
        )
        .await
    }
}

async fn receive(
    req: HttpRequest,
    body: web::Bytes,
    receiver: web::Data<Receiver>,
) -> HttpResponse {
    let at = chrono::Utc::now();
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    receiver.received.lock().expect("lock").push(Received {
        at,
        event: header("x-stayopen-event"),
        delivery: header("x-stayopen-delivery"),
        timestamp: header("x-stayopen-timestamp"),
        signature: header("x-stayopen-signature"),
        traceparent: header("traceparent"),
        body: body.to_vec(),
    });
    let status = receiver
        .script
        .lock()
        .expect("lock")
        .pop_front()
        .unwrap_or(200);
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).expect("status")).finish()
}

/// Starts the receiver on a free loopback port; returns its URL.
pub fn start_receiver(receiver: &Receiver) -> String {
    let data = web::Data::new(receiver.clone());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .route("/hook", web::post().to(receive))
    })
    .workers(1)
    .bind("127.0.0.1:0")
    .expect("bind");
    let addr = server.addrs()[0];
    tokio::spawn(server.run());
    format!("http://{addr}/hook")
}

/// Checks a delivery's signature independently of the cloud's code, as a PSA would:
/// `sha256=hex(HMAC-SHA256(secret, "{timestamp}.{body}"))`.
pub fn signature_valid(secret: &str, received: &Received) -> bool {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(received.timestamp.as_bytes());
    mac.update(b".");
    mac.update(&received.body);
    received.signature == format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}
