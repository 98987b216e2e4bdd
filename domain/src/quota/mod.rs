//! Quotas: the eight resources, their reset periods and windows (UTC), the hot-path engine in
//! Redis ([`engine`]), the limit rows in PostgreSQL ([`store`]) and the rollups that copy
//! counters back into PostgreSQL ([`rollup`]).

pub mod engine;
mod events;
pub mod keys;
pub mod lease;
mod leased;
mod mirror;
pub mod rollup;
pub mod store;

use chrono::{DateTime, Datelike, Duration, TimeZone, Utc};
use serde::{Deserialize, Serialize};

/// A metered resource. `ApiRate` is internal: the per-tenant rate limit of the public API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Resource {
    Users,
    Storage,
    ApiCalls,
    Bandwidth,
    Databases,
    ComputeHours,
    FileUploads,
    EmailSends,
    #[serde(skip)]
    ApiRate,
}

impl Resource {
    /// The eight resources tenants are metered on.
    pub const ALL: [Resource; 8] = [
        Resource::Users,
        Resource::Storage,
        Resource::ApiCalls,
        Resource::Bandwidth,
        Resource::Databases,
        Resource::ComputeHours,
        Resource::FileUploads,
        Resource::EmailSends,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Users => "users",
            Resource::Storage => "storage",
            Resource::ApiCalls => "api_calls",
            Resource::Bandwidth => "bandwidth",
            Resource::Databases => "databases",
            Resource::ComputeHours => "compute_hours",
            Resource::FileUploads => "file_uploads",
            Resource::EmailSends => "email_sends",
            Resource::ApiRate => "api_rate",
        }
    }

    pub fn parse(s: &str) -> Option<Resource> {
        Resource::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// The reset period this resource has in every seeded plan: the engine names a check's keys
    /// for it, and learns the exceptions (a tenant whose plan says otherwise) from Redis.
    pub fn usual_period(self) -> Period {
        match self {
            Resource::Users | Resource::Storage | Resource::Databases => Period::None,
            Resource::ApiCalls | Resource::FileUploads | Resource::EmailSends => Period::Daily,
            Resource::Bandwidth | Resource::ComputeHours => Period::Monthly,
            Resource::ApiRate => Period::Minute,
        }
    }

    /// Gauges (current amount held) go up and down and never reset; the others are counters.
    pub fn is_gauge(self) -> bool {
        matches!(self, Resource::Users | Resource::Storage | Resource::Databases)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    None,
    Minute,
    Hourly,
    Daily,
    Weekly,
    Monthly,
}

impl Period {
    pub fn parse(s: &str) -> Option<Period> {
        Some(match s {
            "none" => Period::None,
            "minute" => Period::Minute,
            "hourly" => Period::Hourly,
            "daily" => Period::Daily,
            "weekly" => Period::Weekly,
            "monthly" => Period::Monthly,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Period::None => "none",
            Period::Minute => "minute",
            Period::Hourly => "hourly",
            Period::Daily => "daily",
            Period::Weekly => "weekly",
            Period::Monthly => "monthly",
        }
    }
}

/// One reset window, `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

/// The window of `period` that contains `now` (UTC; weeks start on Monday). `None` for gauges.
pub fn window(period: Period, now: DateTime<Utc>) -> Option<Window> {
    let ts = now.timestamp();
    let fixed = |len: i64, offset: i64| {
        let start = (ts - offset).div_euclid(len) * len + offset;
        Window { start: at(start), end: at(start + len) }
    };
    Some(match period {
        Period::None => return None,
        Period::Minute => fixed(60, 0),
        Period::Hourly => fixed(3600, 0),
        Period::Daily => fixed(86_400, 0),
        // 1970-01-05 was a Monday.
        Period::Weekly => fixed(7 * 86_400, 4 * 86_400),
        Period::Monthly => {
            let start = Utc.with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0).single().unwrap_or(now);
            let (y, m) = if now.month() == 12 { (now.year() + 1, 1) } else { (now.year(), now.month() + 1) };
            let end = Utc.with_ymd_and_hms(y, m, 1, 0, 0, 0).single().unwrap_or(now + Duration::days(31));
            Window { start, end }
        }
    })
}

fn at(ts: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(ts, 0).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().expect("timestamp")
    }

    #[test]
    fn windows_are_utc_calendar_boundaries() {
        let now = t("2026-11-27T23:59:59Z");
        let w = window(Period::Hourly, now).expect("hourly");
        assert_eq!((w.start, w.end), (t("2026-11-27T23:00:00Z"), t("2026-11-28T00:00:00Z")));
        let w = window(Period::Daily, now).expect("daily");
        assert_eq!((w.start, w.end), (t("2026-11-27T00:00:00Z"), t("2026-11-28T00:00:00Z")));
        // 2026-11-27 is a Friday; its week began on Monday the 23rd.
        let w = window(Period::Weekly, now).expect("weekly");
        assert_eq!((w.start, w.end), (t("2026-11-23T00:00:00Z"), t("2026-11-30T00:00:00Z")));
        let w = window(Period::Monthly, t("2026-12-31T12:00:00Z")).expect("monthly");
        assert_eq!((w.start, w.end), (t("2026-12-01T00:00:00Z"), t("2027-01-01T00:00:00Z")));
        let w = window(Period::Monthly, t("2028-02-29T00:00:00Z")).expect("leap");
        assert_eq!(w.end, t("2028-03-01T00:00:00Z"));
        assert_eq!(window(Period::None, now), None);
        // a boundary belongs to the window it starts
        let w = window(Period::Hourly, t("2026-11-28T00:00:00Z")).expect("hourly");
        assert_eq!(w.start, t("2026-11-28T00:00:00Z"));
    }

    #[test]
    fn resources_round_trip_and_gauges_are_known() {
        for r in Resource::ALL {
            assert_eq!(Resource::parse(r.as_str()), Some(r));
        }
        assert_eq!(Resource::parse("api_rate"), None, "internal resource is not public");
        let gauges: Vec<_> = Resource::ALL.into_iter().filter(|r| r.is_gauge()).collect();
        assert_eq!(gauges, [Resource::Users, Resource::Storage, Resource::Databases]);
    }
}
