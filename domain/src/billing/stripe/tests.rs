use super::*;

#[test]
fn messages_lose_keys_and_card_numbers() {
    let raw = "Invalid API Key provided: sk_test_abc123; card 4242424242424242 ('rk_live_x')";
    let safe = safe_message(raw);
    assert!(!safe.contains("sk_test") && !safe.contains("rk_live") && !safe.contains("4242424242"), "{safe}");
    assert!(safe_message(&"x".repeat(500)).chars().count() <= MAX_MESSAGE + 1);
}

#[test]
fn long_idempotency_keys_are_hashed() {
    let short = idempotent("job-1:open", "customer").map(|s| s.get_key().map(|k| k.into_inner()));
    assert_eq!(short.ok().flatten().as_deref(), Some("job-1:open:customer"));
    let long = idempotent(&"k".repeat(300), "customer").map(|s| s.get_key().map(|k| k.into_inner()));
    assert!(long.ok().flatten().is_some_and(|k| k.starts_with("sha256:") && k.len() <= 255));
}

/// What goes on the wire for a write: the key as `Idempotency-Key`, the secret only in
/// `Authorization`. (localstripe ignores the header, so this reads the request itself.)
#[tokio::test]
async fn writes_send_the_idempotency_key() {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let peer = std::thread::spawn(move || {
        let (socket, _) = listener.accept().expect("accept");
        let mut reader = BufReader::new(socket.try_clone().expect("clone"));
        let mut head = String::new();
        while !head.ends_with("\r\n\r\n") {
            reader.read_line(&mut head).expect("read");
        }
        let length = head
            .lines()
            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length: ").map(str::to_owned))
            .and_then(|n| n.trim().parse::<usize>().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        reader.read_exact(&mut body).expect("body");
        let reply = r#"{"id":"cus_1","object":"customer","metadata":{}}"#;
        let mut socket = socket;
        write!(
            socket,
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{reply}",
            reply.len()
        )
        .expect("write");
        (head, String::from_utf8_lossy(&body).into_owned())
    });
    let settings = StripeSettings {
        secret_key: crate::Secret::new("sk_test_wire".into()),
        api_base: Some(format!("http://{addr}")),
    };
    let billing = StripeBilling::new(&settings).expect("client");
    let made: Tagged =
        billing.write(&CreateCustomer::new().name("Acme"), "job-7:open", "customer").await.expect("sent");
    assert_eq!(made.id, "cus_1");
    let (head, body) = peer.join().expect("peer");
    let head = head.to_ascii_lowercase();
    assert!(head.starts_with("post /v1/customers "), "{head}");
    assert!(head.contains("\r\nidempotency-key: job-7:open:customer\r\n"), "{head}");
    assert_eq!(head.matches("sk_test_wire").count(), 1, "{head}");
    assert!(head.contains("\r\nauthorization: bearer sk_test_wire\r\n"), "{head}");
    assert_eq!(body, "name=Acme");
}

#[test]
fn only_non_stripe_hosts_are_fakes() {
    assert!(is_stripe_host("https://api.stripe.com/"));
    assert!(is_stripe_host("https://files.stripe.com"));
    assert!(!is_stripe_host("http://127.0.0.1:8420"));
    assert!(!is_stripe_host("http://stripe.com.example.org/"));
    assert!(!is_stripe_host("http://localhost:12111/v1"));
}

fn refused(status: u16, code: Option<stripe::ApiErrorsCode>, type_: ApiErrorsType) -> StripeError {
    let api = stripe::ApiErrors {
        advice_code: None,
        charge: None,
        code,
        decline_code: None,
        doc_url: None,
        message: Some("Your card was declined.".into()),
        network_advice_code: None,
        network_decline_code: None,
        param: None,
        payment_intent: None,
        payment_method: None,
        payment_method_type: None,
        request_log_url: None,
        setup_intent: None,
        source: None,
        type_,
    };
    StripeError::Stripe(Box::new(api), status)
}

#[test]
fn classification() {
    use stripe::ApiErrorsCode as Code;
    let transient = |e| matches!(classify(e), ExternalError::Transient(_));
    let invalid = ApiErrorsType::InvalidRequestError;
    assert!(transient(refused(429, Some(Code::RateLimit), invalid.clone())));
    assert!(transient(refused(500, None, ApiErrorsType::ApiError)));
    assert!(transient(refused(503, None, ApiErrorsType::ApiError)));
    assert!(transient(refused(409, Some(Code::LockTimeout), invalid.clone())));
    assert!(transient(refused(409, Some(Code::IdempotencyKeyInUse), ApiErrorsType::IdempotencyError)));
    assert!(!transient(refused(409, None, invalid.clone())));
    assert!(!transient(refused(400, Some(Code::ResourceAlreadyExists), invalid.clone())));
    assert!(!transient(refused(404, Some(Code::ResourceMissing), invalid.clone())));
    assert!(!transient(refused(401, None, invalid.clone())));
    assert!(!transient(refused(402, Some(Code::CardDeclined), ApiErrorsType::CardError)));
    assert!(is_decline(&refused(402, Some(Code::CardDeclined), ApiErrorsType::CardError)));
    assert!(is_decline(&refused(402, None, invalid.clone())));
    assert!(!is_decline(&refused(400, None, invalid)));
    assert!(transient(StripeError::Timeout));
    assert!(transient(StripeError::ClientError("connection refused".into())));
    assert!(transient(StripeError::JSONDeserialize("error deserializing Stripe error".into())));
    assert!(!transient(StripeError::JSONDeserialize("error deserializing request data".into())));
}
