//! The success envelope: `{"success":true,"data":…,"meta":{"total","page","limit"}?}`.

use super::error::{ApiError, ErrorCode, Result};
use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize, Serializer};

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Envelope<T> {
    /// Always `true`.
    pub success: bool,
    pub data: T,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meta: Option<PageMeta>,
}

#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
pub struct PageMeta {
    pub total: i64,
    pub page: u32,
    pub limit: u32,
}

/// `200` with `data`.
pub fn ok<T: Serialize>(data: T) -> Response {
    with_status(StatusCode::OK, data)
}

pub fn with_status<T: Serialize>(status: StatusCode, data: T) -> Response {
    json(status, &Envelope { success: true, data, meta: None })
}

/// `200` with one page of a list.
pub fn page<T: Serialize>(items: Vec<T>, meta: PageMeta) -> Response {
    json(StatusCode::OK, &Envelope { success: true, data: items, meta: Some(meta) })
}

/// Every JSON body the API sends, envelopes and errors alike, is written here: straight into a
/// `Vec` sized for the usual small body (`axum::Json` writes through a `BytesMut` writer that
/// starts at 128 bytes and grows while the quota answer is written — a measurable share of a
/// hot-path request).
pub fn json<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Response {
    let mut body = Vec::with_capacity(256);
    if let Err(err) = serde_json::to_writer(&mut body, value) {
        // Not reachable with the types the API sends (string keys only); still an envelope.
        tracing::error!(error = %err, "could not serialize a response body");
        let body = r#"{"success":false,"error":{"code":"INTERNAL","message":"internal error"}}"#;
        let mut response = with_body(StatusCode::INTERNAL_SERVER_ERROR, Body::from(body));
        response.extensions_mut().insert(ErrorCode("INTERNAL"));
        return response;
    }
    with_body(status, Body::from(body))
}

/// A body that is JSON already (a cached, pre-serialized envelope).
pub fn with_body(status: StatusCode, body: impl Into<Body>) -> Response {
    let mut response = Response::new(body.into());
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// `serialize_with` for an optional whole-second UTC time on a hot route: the same text as
/// chrono's own `Serialize` (`2026-12-01T00:00:00Z`), computed from the Unix time and written
/// without `core::fmt`, which chrono formats through a character at a time. Anything else (a
/// fraction of a second, a year outside 0–9999) goes through chrono.
pub fn utc_seconds<S: Serializer>(time: &Option<DateTime<Utc>>, serializer: S) -> Result<S::Ok, S::Error> {
    let Some(time) = time else { return serializer.serialize_none() };
    let seconds = time.timestamp();
    let (year, month, day) = civil_from_days(seconds.div_euclid(86_400));
    if time.timestamp_subsec_nanos() != 0 || !(0..=9999).contains(&year) {
        return serializer.serialize_some(time);
    }
    let of_day = seconds.rem_euclid(86_400);
    let mut text = *b"0000-00-00T00:00:00Z";
    let mut put = |at: usize, width: usize, mut n: i64| {
        for i in (at..at + width).rev() {
            text[i] = b'0' + (n % 10) as u8;
            n /= 10;
        }
    };
    put(0, 4, year);
    put(5, 2, month);
    put(8, 2, day);
    put(11, 2, of_day / 3600);
    put(14, 2, of_day / 60 % 60);
    put(17, 2, of_day % 60);
    // ASCII digits and separators only.
    serializer.serialize_some(std::str::from_utf8(&text).unwrap_or_default())
}

/// The proleptic Gregorian (year, month, day) of a count of days since 1970-01-01 (H. Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// `?page&limit` of every paged list: page 1 and 20 items unless asked otherwise.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    #[param(minimum = 1, maximum = 1000000)]
    pub page: Option<u32>,
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
}

/// Pages beyond this are refused rather than scanned for.
pub const MAX_PAGE: u32 = 1_000_000;

impl PageParams {
    pub fn resolve(&self) -> Result<(u32, u32)> {
        let page = self.page.unwrap_or(1);
        let limit = self.limit.unwrap_or(20);
        if !(1..=MAX_PAGE).contains(&page) {
            return Err(ApiError::field("page", "must be from 1 to 1000000"));
        }
        if !(1..=100).contains(&limit) {
            return Err(ApiError::field("limit", "must be from 1 to 100"));
        }
        Ok((page, limit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Fast(#[serde(serialize_with = "utc_seconds")] Option<DateTime<Utc>>);

    #[test]
    fn utc_seconds_writes_what_chrono_writes() {
        let times = [
            "2026-12-01T00:00:00Z",
            "2028-02-29T23:59:59Z",
            "1970-01-01T00:00:00Z",
            "0000-01-01T00:00:00Z",
            "9999-12-31T23:59:59Z",
            "2026-11-30T19:08:31.250Z",
            "+10000-01-01T00:00:00Z",
            "-0001-12-31T00:00:00Z",
        ];
        for text in times {
            let time: DateTime<Utc> = text.parse().expect(text);
            let chrono = serde_json::to_string(&Some(time)).expect("chrono");
            assert_eq!(serde_json::to_string(&Fast(Some(time))).expect("fast"), chrono, "{text}");
        }
        // Every second of one day, and every 29th day of the years 0000 to 9999 (each at another
        // second of the day), on past the year 9999 where chrono takes over.
        let start: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().expect("start");
        let year_zero = "0000-01-01T00:00:00Z".parse::<DateTime<Utc>>().expect("year 0") - start;
        let days = (0..126_000).map(|n| year_zero.num_seconds() + n * (29 * 86_400 + 13));
        for s in (0..86_400).chain(days) {
            let time = start + chrono::Duration::seconds(s);
            assert_eq!(
                serde_json::to_string(&Fast(Some(time))).expect("fast"),
                serde_json::to_string(&time).expect("chrono")
            );
        }
        assert_eq!(serde_json::to_string(&Fast(None)).expect("none"), "null");
    }

    #[test]
    fn json_bodies_carry_the_status_and_content_type() {
        let response = json(StatusCode::CREATED, &serde_json::json!({ "a": 1 }));
        assert_eq!(response.status(), StatusCode::CREATED);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        // A map with a non-string key cannot be JSON: the envelope of an internal error.
        let bad = std::collections::BTreeMap::from([((1, 2), 3)]);
        let response = json(StatusCode::OK, &bad);
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(response.extensions().get::<ErrorCode>().map(|c| c.0), Some("INTERNAL"));
    }
}
