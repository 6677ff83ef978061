//! Requests waiting for the model: bounded, ordered by the caller's stake, run in batches.
//!
//! One inference thread owns the model's runs (an ONNX Runtime session must not run from two
//! threads at once; its own intra-op threads use the cores). It takes the highest-stake waiting
//! requests, up to the model's batch size, and runs them as one tensor: under load that is fewer,
//! larger runs; at rest it is a batch of one with no added wait. When the queue is full a new
//! request displaces the lowest-stake one waiting if it outranks it, else it is shed itself (503);
//! a request whose caller's timeout passed while it waited is answered 408 without running.

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use tokio::sync::oneshot;

use crate::serving::Slot;

/// How a queued request ended, when it did not produce a prediction.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// 503: shed under overload.
    Overloaded,
    /// 408: its deadline passed before it ran.
    TimedOut,
    /// 500: inference failed.
    Failed(String),
}

pub type Reply = Result<f64, Refusal>;

struct Job {
    input: Vec<f32>,
    /// Floats per input, so a job prepared for another input size is never mixed in.
    len: usize,
    deadline: Instant,
    reply: oneshot::Sender<Reply>,
}

/// Highest priority first; among equals, first come first served.
type Key = (u64, std::cmp::Reverse<u64>);

struct Inner {
    jobs: BTreeMap<Key, Job>,
    seq: u64,
    closed: bool,
}

pub struct Queue {
    inner: Mutex<Inner>,
    ready: Condvar,
    capacity: usize,
}

impl Queue {
    pub fn new(capacity: usize) -> Arc<Queue> {
        Arc::new(Queue {
            inner: Mutex::new(Inner {
                jobs: BTreeMap::new(),
                seq: 0,
                closed: false,
            }),
            ready: Condvar::new(),
            capacity: capacity.max(1),
        })
    }

    /// Queues an input; the receiver gets its prediction or why not.
    pub fn submit(
        &self,
        priority: u64,
        input: Vec<f32>,
        deadline: Instant,
    ) -> oneshot::Receiver<Reply> {
        let (tx, rx) = oneshot::channel();
        let Ok(mut inner) = self.inner.lock() else {
            let _ = tx.send(Err(Refusal::Failed("queue unavailable".into())));
            return rx;
        };
        if inner.closed {
            let _ = tx.send(Err(Refusal::Overloaded));
            return rx;
        }
        if inner.jobs.len() >= self.capacity {
            let lowest = inner.jobs.keys().next().copied();
            match lowest {
                Some(k) if k.0 < priority => {
                    if let Some(shed) = inner.jobs.remove(&k) {
                        let _ = shed.reply.send(Err(Refusal::Overloaded));
                    }
                }
                _ => {
                    let _ = tx.send(Err(Refusal::Overloaded));
                    return rx;
                }
            }
        }
        inner.seq += 1;
        let key = (priority, std::cmp::Reverse(inner.seq));
        let len = input.len();
        inner.jobs.insert(
            key,
            Job {
                input,
                len,
                deadline,
                reply: tx,
            },
        );
        drop(inner);
        self.ready.notify_one();
        rx
    }

    /// Whether a request of `priority` would be shed at once: the queue is full of requests that
    /// rank at least as high. Checked before a request's body is read and its image decoded.
    pub fn is_full_for(&self, priority: u64) -> bool {
        let Ok(inner) = self.inner.lock() else {
            return true;
        };
        inner.jobs.len() >= self.capacity
            && inner.jobs.keys().next().is_some_and(|k| k.0 >= priority)
    }

    /// Requests waiting now.
    pub fn len(&self) -> usize {
        self.inner.lock().map(|i| i.jobs.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stops the worker; waiting requests are answered 503.
    pub fn close(&self) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.closed = true;
            for (_, job) in std::mem::take(&mut inner.jobs) {
                let _ = job.reply.send(Err(Refusal::Overloaded));
            }
        }
        self.ready.notify_all();
    }

    /// Waits for work and takes up to `max` jobs of one input size, highest priority first.
    fn take(&self, max: usize) -> Option<Vec<Job>> {
        let mut inner = self.inner.lock().ok()?;
        while inner.jobs.is_empty() && !inner.closed {
            inner = self.ready.wait(inner).ok()?;
        }
        if inner.closed {
            return None;
        }
        let mut batch: Vec<Job> = Vec::new();
        while batch.len() < max {
            let Some(key) = inner.jobs.keys().next_back().copied() else {
                break;
            };
            if batch
                .first()
                .is_some_and(|j: &Job| j.len != inner.jobs[&key].len)
            {
                break;
            }
            if let Some(job) = inner.jobs.remove(&key) {
                batch.push(job);
            }
        }
        Some(batch)
    }
}

/// The inference thread: runs batches on whatever model the slot holds at that moment, until the
/// queue is closed.
pub fn run_worker(queue: Arc<Queue>, slot: Arc<Slot>) {
    loop {
        let max = slot.current().map_or(1, |m| m.max_batch.max(1));
        let Some(batch) = queue.take(max) else {
            return;
        };
        let now = Instant::now();
        let (live, late): (Vec<Job>, Vec<Job>) = batch.into_iter().partition(|j| j.deadline > now);
        for job in late {
            let _ = job.reply.send(Err(Refusal::TimedOut));
        }
        if live.is_empty() {
            continue;
        }
        let Some(model) = slot.current() else {
            for job in live {
                let _ = job
                    .reply
                    .send(Err(Refusal::Failed("no model loaded".into())));
            }
            continue;
        };
        let n = live.len();
        let mut input = Vec::with_capacity(n * live[0].len);
        for job in &live {
            input.extend_from_slice(&job.input);
        }
        match model.predict(&input, n) {
            Ok(predictions) => {
                for (job, p) in live.into_iter().zip(predictions) {
                    let _ = job.reply.send(Ok(p));
                }
            }
            Err(e) => {
                tracing::error!("inference on {} failed: {e}", model.path.display());
                for job in live {
                    let _ = job.reply.send(Err(Refusal::Failed(e.to_string())));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn later() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    #[test]
    fn full_queue_sheds_the_lowest_stake() {
        let q = Queue::new(2);
        let mut low = q.submit(1, vec![0.0], later());
        let _mid = q.submit(5, vec![0.0], later());
        // Outranks the lowest: it is shed, the newcomer waits.
        let _high = q.submit(9, vec![0.0], later());
        assert_eq!(low.try_recv().unwrap(), Err(Refusal::Overloaded));
        // Does not outrank anyone: shed itself.
        let mut lower = q.submit(2, vec![0.0], later());
        assert_eq!(lower.try_recv().unwrap(), Err(Refusal::Overloaded));
        assert_eq!(q.len(), 2);
    }

    #[test]
    fn batches_take_highest_stake_first_then_arrival_order() {
        let q = Queue::new(10);
        let _waiting: Vec<_> = [(1u64, 1.0f32), (7, 2.0), (7, 3.0), (3, 4.0)]
            .into_iter()
            .map(|(p, v)| q.submit(p, vec![v], later()))
            .collect();
        let batch = q.take(3).unwrap();
        let order: Vec<f32> = batch.iter().map(|j| j.input[0]).collect();
        assert_eq!(order, vec![2.0, 3.0, 4.0]);
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn close_answers_everyone_waiting() {
        let q = Queue::new(10);
        let mut rx = q.submit(1, vec![0.0], later());
        q.close();
        assert_eq!(rx.try_recv().unwrap(), Err(Refusal::Overloaded));
        assert!(q.take(4).is_none());
    }
}
