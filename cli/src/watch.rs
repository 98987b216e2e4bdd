//! Following a job until it finishes, fed by its server-sent events (`GET /api/v1/jobs/{id}/events`:
//! the whole job as JSON in each event, `finished` last, then the stream ends).
//!
//! The stream is the fast path, not the only one: a stream that ends early (the API replica
//! shutting down) or breaks is opened again, and if the API can't stream (503: Redis pub/sub
//! down) the job is polled every half second instead. For people, a progress bar on stderr
//! (drawn only on a terminal) counts the completed steps and names the running one, and each
//! step is printed on stdout as it completes, fails or is compensated.

use crate::api::{Client, path};
use crate::error::{Failure, Result};
use crate::output;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;
use std::collections::HashSet;
use std::time::Duration;
use tokio::time::Instant;

/// The API sends a keep-alive every 15 s: a stream silent this long is dead.
const READ_TIMEOUT: Duration = Duration::from_secs(45);
const POLL: Duration = Duration::from_millis(500);
const MAX_BROKEN_STREAMS: u32 = 5;

/// One server-sent event.
#[derive(Debug, PartialEq, Eq)]
pub struct SseEvent {
    pub event: String,
    pub data: String,
}

/// Splits a byte stream into events: `event:` and `data:` fields, a blank line ends an event,
/// `:` lines are comments (keep-alives).
#[derive(Debug, Default)]
pub struct SseParser {
    pending: Vec<u8>,
    event: String,
    data: String,
}

impl SseParser {
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        self.pending.extend_from_slice(chunk);
        let mut events = Vec::new();
        while let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
            let raw: Vec<u8> = self.pending.drain(..=end).collect();
            let line = String::from_utf8_lossy(&raw);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if !self.data.is_empty() {
                    let event = std::mem::take(&mut self.event);
                    let event = if event.is_empty() { "message".to_owned() } else { event };
                    events.push(SseEvent { event, data: std::mem::take(&mut self.data) });
                }
                self.event.clear();
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => self.event = value.to_owned(),
                "data" => {
                    if !self.data.is_empty() {
                        self.data.push('\n');
                    }
                    self.data.push_str(value);
                }
                _ => {}
            }
        }
        events
    }
}

pub fn is_final(job: &Value) -> bool {
    matches!(job["status"].as_str(), Some("succeeded" | "failed" | "compensated"))
}

/// Ok for a succeeded job; a failed or compensated one is a [`Failure::Job`] with its error.
pub fn outcome(job: &Value) -> Result<()> {
    match job["status"].as_str() {
        Some("succeeded") => Ok(()),
        status => Err(Failure::Job {
            id: output::text(&job["id"]),
            status: status.unwrap_or("unknown").to_owned(),
            code: job["error"]["code"].as_str().unwrap_or("JOB_FAILED").to_owned(),
            message: crate::error::one_line(job["error"]["message"].as_str().unwrap_or("no reason given")),
        }),
    }
}

/// What the person at the terminal sees while a job runs.
pub struct View {
    bar: ProgressBar,
    /// Print steps on stdout (not with --json, whose stdout is the JSON alone).
    steps_on_stdout: bool,
    reported: HashSet<(String, String)>,
    last_status: String,
}

impl View {
    pub fn new(steps_on_stdout: bool) -> Self {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} steps  {msg}")
            .map(|s| s.progress_chars("=> "))
            .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.enable_steady_tick(Duration::from_millis(120));
        Self { bar, steps_on_stdout, reported: HashSet::new(), last_status: "queued".into() }
    }

    pub fn update(&mut self, job: &Value) {
        let steps = job["steps"].as_array().cloned().unwrap_or_default();
        let width = steps.iter().map(|s| s["name"].as_str().map_or(0, str::len)).max().unwrap_or(0);
        for step in &steps {
            let (name, status) = (output::text(&step["name"]), output::text(&step["status"]));
            let done = matches!(status.as_str(), "succeeded" | "failed" | "compensated");
            if done && self.reported.insert((name.clone(), status.clone())) && self.steps_on_stdout {
                let line = step_line(step, &name, &status, width);
                self.bar.suspend(|| println!("{line}"));
            }
        }
        let completed = steps.iter().filter(|s| s["status"] == "succeeded").count();
        self.bar.set_length(steps.len() as u64);
        self.bar.set_position(completed as u64);
        let running = steps.iter().find(|s| s["status"] == "running").and_then(|s| s["name"].as_str());
        self.last_status = output::text(&job["status"]);
        self.bar.set_message(match (running, self.last_status.as_str()) {
            (Some(step), _) => step.to_owned(),
            (None, "retrying") => format!("retrying: {}", output::text(&job["error"]["message"])),
            (None, status) => status.to_owned(),
        });
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

fn step_line(step: &Value, name: &str, status: &str, width: usize) -> String {
    match status {
        "succeeded" => {
            let took = output::elapsed(&step["startedAt"], &step["finishedAt"]).unwrap_or_default();
            format!("  ✓ {name:<width$}  {took}")
        }
        "failed" => format!("  ✗ {name:<width$}  failed: {}", output::text(&step["error"])),
        _ => match step["error"].as_str() {
            Some(error) => format!("  ↺ {name:<width$}  compensated after: {error}"),
            None => format!("  ↺ {name:<width$}  compensated"),
        },
    }
}

/// Follows job `id` until it is final (returned, whatever its outcome) or `timeout` passes.
pub async fn follow(api: &Client, id: &str, timeout: Duration, view: &mut View) -> Result<Value> {
    let deadline = Instant::now() + timeout;
    let events = path(&["api", "v1", "jobs", id, "events"]);
    let mut polling = false;
    let mut broken = 0;
    let still_running = |status: &str| {
        Failure::other(format!(
            "job {id} is still {status} after {} s; it goes on — follow it with `tenantctl jobs watch {id}`",
            timeout.as_secs()
        ))
    };
    let result = loop {
        if polling {
            let job = match api.get(&path(&["api", "v1", "jobs", id]), &[]).await {
                Ok(answer) => answer.data,
                Err(err) => break Err(err),
            };
            view.update(&job);
            if is_final(&job) {
                break Ok(job);
            }
            if Instant::now() + POLL >= deadline {
                break Err(still_running(&view.last_status));
            }
            tokio::time::sleep(POLL).await;
            continue;
        }
        match tokio::time::timeout_at(deadline, read_stream(api, &events, view)).await {
            Err(_) => break Err(still_running(&view.last_status)),
            Ok(Ok(Some(job))) => break Ok(job),
            Ok(Err(Failure::Api(err))) if err.status == 503 => polling = true,
            Ok(Ok(None) | Err(Failure::Other(_))) if broken < MAX_BROKEN_STREAMS => {
                // Ended early or broke: open it again (it starts with the job's current state).
                broken += 1;
                tokio::time::sleep(Duration::from_millis(250 * u64::from(broken))).await;
            }
            Ok(Ok(None)) => break Err(Failure::other(format!("the event stream of job {id} keeps ending early"))),
            Ok(Err(err)) => break Err(err),
        }
    };
    view.finish();
    result
}

/// Reads one stream: the final job, or None if the stream ended before it.
async fn read_stream(api: &Client, events: &str, view: &mut View) -> Result<Option<Value>> {
    let mut response = api.stream(events).await?;
    let mut parser = SseParser::default();
    loop {
        let chunk = match tokio::time::timeout(READ_TIMEOUT, response.chunk()).await {
            Err(_) => return Err(Failure::other("the job's event stream went silent")),
            Ok(Err(err)) => return Err(api.unreachable(&err)),
            Ok(Ok(None)) => return Ok(None),
            Ok(Ok(Some(chunk))) => chunk,
        };
        for event in parser.feed(&chunk) {
            let Ok(job) = serde_json::from_str::<Value>(&event.data) else { continue };
            view.update(&job);
            if event.event == "finished" || is_final(&job) {
                return Ok(Some(job));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_split_across_chunks_and_comments() {
        let mut p = SseParser::default();
        assert!(p.feed(b": keep-alive\n\nevent: progress\nid: 1\ndata: {\"a\"").is_empty());
        let events = p.feed(b":1}\n\nevent: finished\r\ndata: x\r\n\r\n");
        assert_eq!(
            events,
            vec![
                SseEvent { event: "progress".into(), data: "{\"a\":1}".into() },
                SseEvent { event: "finished".into(), data: "x".into() },
            ]
        );
    }

    #[test]
    fn outcomes() {
        assert!(outcome(&json!({"id": "j", "status": "succeeded"})).is_ok());
        let failed = outcome(&json!({"id": "j", "status": "compensated",
            "error": {"code": "STEP_FAILED", "message": "billing refused"}}))
        .expect_err("compensated");
        assert_eq!(failed.to_string(), "tenantctl: job j compensated: STEP_FAILED: billing refused");
        assert_eq!(failed.exit_code(), 1);
    }
}
