//! The idle-polling strategy of the queues.
//!
//! apalis-redis on its own fetches only on its heartbeat, and the stock interval strategy arms its
//! next timer without polling it, so its wake-up can be lost and a worker stalls with work queued
//! (see APALIS.md). This one polls its fresh timer at once, registering the waker every time.

use apalis::prelude::{PollSnapshot, PollStrategy};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Sleep;

pub struct RearmingInterval {
    every: Duration,
    timer: Pin<Box<Sleep>>,
}

impl RearmingInterval {
    pub fn new(every: Duration) -> Self {
        Self { every, timer: Box::pin(tokio::time::sleep(every)) }
    }
}

impl PollStrategy for RearmingInterval {
    fn poll_drive(&mut self, cx: &mut Context<'_>, _: &PollSnapshot) -> Poll<Option<()>> {
        match self.timer.as_mut().poll(cx) {
            Poll::Ready(()) => {
                let next = tokio::time::Instant::now() + self.every;
                self.timer.as_mut().reset(next);
                // Arm the waker on the new deadline now, not on some later poll.
                let _ = self.timer.as_mut().poll(cx);
                Poll::Ready(Some(()))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}
