//! HTTP/1.1 to the web console: requests with a session cookie, answers as text or JSON.

use std::time::Duration;

use serde_json::{json, Value};

use super::PATIENCE;

pub type Http = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Full<bytes::Bytes>,
>;

pub fn http() -> Http {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

pub fn request(
    method: &str,
    url: &str,
    cookie: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    let mut builder = http::Request::builder().method(method).uri(url);
    if let Some(cookie) = cookie {
        builder = builder.header("cookie", cookie);
    }
    if body.is_some() {
        builder = builder.header("content-type", "application/json");
    }
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    builder
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .expect("request")
}

pub async fn body_text<B>(response: http::Response<B>) -> String
where
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    use http_body_util::BodyExt as _;
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Reads an event stream until `until` appears in it (or the stream ends).
pub async fn read_stream_until<B>(response: http::Response<B>, until: &str) -> String
where
    B: http_body::Body<Data = bytes::Bytes> + Unpin,
    B::Error: std::fmt::Debug,
{
    use http_body_util::BodyExt as _;
    let mut body = response.into_body();
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !text.contains(until) {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    text.push_str(&String::from_utf8_lossy(data));
                }
            }
            Ok(_) => break,
            Err(_) => panic!("{until:?} never came; the stream said {text:?}"),
        }
    }
    text
}

/// A console session signed in over HTTP, for tests that act through the console's API.
pub struct ConsoleSession {
    client: Http,
    base: String,
    cookie: String,
    csrf: String,
}

impl ConsoleSession {
    /// Signs in to the console at `base` (http://host:port): with `token` when authentication
    /// is on, else under `name`.
    pub async fn sign_in(base: &str, token: Option<&str>, name: &str) -> ConsoleSession {
        let client = http();
        let body = match token {
            Some(token) => json!({ "token": token }),
            None => json!({ "name": name }),
        };
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let answer = loop {
            match client
                .request(request(
                    "POST",
                    &format!("{base}/api/session"),
                    None,
                    &[],
                    Some(body.clone()),
                ))
                .await
            {
                Ok(answer) => break answer,
                Err(_) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("the console at {base} does not answer: {e}"),
            }
        };
        assert_eq!(answer.status(), 200, "sign-in refused");
        let cookie = answer
            .headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .expect("a session cookie")
            .to_owned();
        let info: Value = serde_json::from_str(&body_text(answer).await).expect("JSON");
        let csrf = info["csrf"].as_str().expect("a CSRF token").to_owned();
        ConsoleSession {
            client,
            base: base.to_owned(),
            cookie,
            csrf,
        }
    }

    /// `GET path`: the status and the JSON answer.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let answer = self
            .client
            .request(request(
                "GET",
                &format!("{}{path}", self.base),
                Some(&self.cookie),
                &[],
                None,
            ))
            .await
            .expect("GET");
        let status = answer.status().as_u16();
        (
            status,
            serde_json::from_str(&body_text(answer).await).unwrap_or(Value::Null),
        )
    }

    /// `POST path` with the session's CSRF token: the status and the JSON answer.
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let answer = self
            .client
            .request(request(
                "POST",
                &format!("{}{path}", self.base),
                Some(&self.cookie),
                &[("x-csrf-token", &self.csrf)],
                Some(body),
            ))
            .await
            .expect("POST");
        let status = answer.status().as_u16();
        (
            status,
            serde_json::from_str(&body_text(answer).await).unwrap_or(Value::Null),
        )
    }
}
