//! Live updates: one Server-Sent Events stream per signed-in tab (`GET /api/v1/stream`) tells the
//! pages what changed, and each page re-fetches what it shows of that thing.
//!
//! Design: the stream only *wakes* pages; the data always comes from the REST API, so a missed or
//! duplicated event can never make a page show something the API would not. Events land in a short
//! numbered log; each page's loop ([`Feed`]) checks the log for events it is interested in, waits a
//! moment so a burst becomes one fetch, and fetches. While the stream is down every page polls on
//! its own, faster, so the dashboard never shows stale state as live. The indicator in the top bar
//! says which of the two is happening.

use std::cell::Cell;
use std::future::Future;
use std::rc::Rc;

use gloo_timers::future::TimeoutFuture;
use leptos::prelude::*;
use leptos::task::spawn_local_scoped_with_cancellation;
use stayopen_shared::api::{CurrentUser, StreamEvent};
use wasm_bindgen::JsCast;
use wasm_bindgen::closure::Closure;
use web_sys::{EventSource, MessageEvent};

use crate::api::{self, Failure};
use crate::logic::Interest;
use crate::session::Session;

/// How often a page re-fetches while the stream works: only a safety net for lost events.
const SLOW_POLL_MS: f64 = 30_000.0;
/// How often a page re-fetches while the stream is down.
const FAST_POLL_MS: f64 = 5_000.0;
/// Events arriving within this of the first one are handled by the same fetch.
const DEBOUNCE_MS: u32 = 250;
/// How often a page looks at the event log.
const CHECK_MS: u32 = 100;
/// Events kept for pages to look at; a page slower than this many events re-fetches anyway.
const LOG_LEN: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamState {
    Connecting,
    Live,
    Reconnecting,
}

/// The stream's state and its recent events, provided as context to every page.
#[derive(Debug, Clone, Copy)]
pub struct Live {
    pub state: RwSignal<StreamState>,
    /// `(number, event)`, oldest first; numbers grow by one per event.
    log: RwSignal<Vec<(u64, StreamEvent)>>,
    /// Bumped whenever events may have been missed (the stream (re)opened): every page re-fetches.
    resyncs: RwSignal<u64>,
    next: RwSignal<u64>,
}

impl Live {
    pub fn new() -> Self {
        Self {
            state: RwSignal::new(StreamState::Connecting),
            log: RwSignal::new(Vec::new()),
            resyncs: RwSignal::new(0),
            next: RwSignal::new(1),
        }
    }

    fn push(self, event: StreamEvent) {
        let number = self.next.get_untracked();
        self.next.set(number + 1);
        self.log.update(|log| {
            log.push((number, event));
            if log.len() > LOG_LEN {
                let excess = log.len() - LOG_LEN;
                log.drain(..excess);
            }
        });
    }

    /// The number the next event will get: a page's starting point in the log.
    fn position(self) -> (u64, u64) {
        (self.next.get_untracked(), self.resyncs.get_untracked())
    }

    /// Whether anything since `position` concerns `interest`; moves `position` past it.
    fn changed_since(self, position: &mut (u64, u64), interest: Interest) -> bool {
        let (next, resyncs) = self.position();
        let missed_some = self.log.with_untracked(|log| {
            log.first()
                .is_some_and(|(first, _)| *first > position.0 && position.0 < next)
        });
        let relevant = self.log.with_untracked(|log| {
            log.iter()
                .any(|(n, event)| *n >= position.0 && interest.wants(event))
        });
        let resynced = resyncs != position.1 && interest != Interest::Nothing;
        *position = (next, resyncs);
        relevant || resynced || (missed_some && interest != Interest::Nothing)
    }
}

pub fn use_live() -> Live {
    use_context::<Live>().unwrap_or_else(Live::new)
}

/// Keeps the stream open while the signed-in app is shown; cancelled with it. Each connection
/// opens with a fresh single-use ticket (`POST /api/v1/stream/tickets`): tokens never go into the
/// stream's URL, where logs and proxies would keep them.
pub fn run_stream(session: Session, live: Live) {
    spawn_local_scoped_with_cancellation(async move {
        let mut backoff_ms: u32 = 1_000;
        while session.token.get_untracked().is_some() {
            // The API client renews an expired access token; a refused renewal ends the session
            // (and this loop with the app).
            let ticket = match api::stream_ticket(session).await {
                Ok(ticket) => ticket,
                Err(Failure::Unauthorized(_)) => break,
                Err(_) => {
                    live.state.set(StreamState::Reconnecting);
                    TimeoutFuture::new(backoff_ms).await;
                    backoff_ms = (backoff_ms * 2).min(15_000);
                    continue;
                }
            };
            let connection = Connection::open(&ticket.ticket, live);
            let Some(connection) = connection else {
                live.state.set(StreamState::Reconnecting);
                TimeoutFuture::new(backoff_ms).await;
                continue;
            };
            // Wait until it fails for good; the browser's own retries count as failures too, since
            // they would present the used ticket again.
            while !connection.failed.get() {
                TimeoutFuture::new(250).await;
                if connection.opened.replace(false) {
                    backoff_ms = 1_000;
                }
            }
            drop(connection);
            live.state.set(StreamState::Reconnecting);
            TimeoutFuture::new(backoff_ms).await;
            backoff_ms = (backoff_ms * 2).min(15_000);
            // The cloud closes a stream whose user may no longer see it: find out who we are now.
            match api::get::<CurrentUser>(session, "/api/v1/me").await {
                Err(Failure::Unauthorized(_)) => break,
                Ok(user) => {
                    if session.user.with_untracked(|u| u.as_ref() != Some(&user)) {
                        session.user.set(Some(user));
                    }
                }
                Err(_) => {}
            }
        }
    });
}

/// An open `EventSource` with its handlers; closed when dropped (page left, signed out).
struct Connection {
    source: EventSource,
    failed: Rc<Cell<bool>>,
    opened: Rc<Cell<bool>>,
    _on_open: Closure<dyn FnMut()>,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
    _on_error: Closure<dyn FnMut()>,
}

impl Connection {
    fn open(ticket: &str, live: Live) -> Option<Connection> {
        let url = format!(
            "/api/v1/stream{}",
            crate::logic::query_string(&[("ticket", Some(ticket.to_owned()))])
        );
        let source = EventSource::new(&url).ok()?;
        let failed = Rc::new(Cell::new(false));
        let opened = Rc::new(Cell::new(false));
        let on_open = {
            let opened = opened.clone();
            Closure::<dyn FnMut()>::new(move || {
                opened.set(true);
                live.state.set(StreamState::Live);
                // Whatever happened while the stream was down was not heard: re-fetch everything.
                live.resyncs.update(|n| *n += 1);
            })
        };
        let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |message: MessageEvent| {
            if let Some(text) = message.data().as_string()
                && let Ok(event) = serde_json::from_str::<StreamEvent>(&text)
            {
                live.push(event);
            }
        });
        let on_error = {
            let failed = failed.clone();
            let source = source.clone();
            Closure::<dyn FnMut()>::new(move || {
                source.close();
                failed.set(true);
            })
        };
        source.set_onopen(Some(on_open.as_ref().unchecked_ref()));
        source.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        source.set_onerror(Some(on_error.as_ref().unchecked_ref()));
        Some(Connection {
            source,
            failed,
            opened,
            _on_open: on_open,
            _on_message: on_message,
            _on_error: on_error,
        })
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.source.set_onopen(None);
        self.source.set_onmessage(None);
        self.source.set_onerror(None);
        self.source.close();
    }
}

/// Milliseconds since the epoch by the browser's clock; only differences are used.
pub fn now_ms() -> f64 {
    web_sys::js_sys::Date::now()
}

/// The browser's "now" (`chrono`'s clock is not available to wasm32-unknown-unknown).
pub fn utc_now() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_millis(now_ms() as i64).unwrap_or_default()
}

/// What a page shows of one API resource, kept fresh: fetched at once, again when a live event
/// concerns it or [`Feed::reload`] is called, and on a slow poll.
#[derive(Debug)]
pub struct Feed<T: Send + Sync + 'static> {
    pub data: RwSignal<Option<T>>,
    /// Why the last fetch failed; the last good data stays shown.
    pub error: RwSignal<Option<Failure>>,
    /// When the last fetch succeeded (browser clock, ms).
    pub updated_at: RwSignal<Option<f64>>,
    wake: RwSignal<u64>,
}

impl<T: Send + Sync + 'static> Clone for Feed<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T: Send + Sync + 'static> Copy for Feed<T> {}

impl<T: Send + Sync + 'static> Feed<T> {
    /// Fetch again now (after an action, or when the page's filters changed).
    pub fn reload(self) {
        self.wake.update(|n| *n += 1);
    }

    pub fn loaded(self) -> bool {
        self.data.with(Option::is_some)
    }
}

/// Re-fetches `feed` every `every_ms` while `pending` holds for its data: for changes the stream does
/// not announce but that land within seconds (a command's acknowledgement, an appliance reporting
/// the policy version it was just sent). Scoped to the calling component.
pub fn follow_while<T: Send + Sync + 'static>(
    feed: Feed<T>,
    every_ms: u32,
    pending: impl Fn(&T) -> bool + 'static,
) {
    spawn_local_scoped_with_cancellation(async move {
        loop {
            TimeoutFuture::new(every_ms).await;
            if feed
                .data
                .with_untracked(|d| d.as_ref().is_some_and(&pending))
            {
                feed.reload();
            }
        }
    });
}

/// Starts a [`Feed`]: `fetch` runs in a loop scoped to the calling component, so leaving the page
/// cancels it. `min_interval_ms` spaces fetches caused by events (a fleet page under a storm of
/// telemetry re-fetches at most that often).
pub fn feed<T, F, Fut>(interest: Interest, min_interval_ms: f64, fetch: F) -> Feed<T>
where
    T: Send + Sync + 'static,
    F: Fn() -> Fut + 'static,
    Fut: Future<Output = Result<T, Failure>> + 'static,
{
    let feed = Feed {
        data: RwSignal::new(None),
        error: RwSignal::new(None),
        updated_at: RwSignal::new(None),
        wake: RwSignal::new(0),
    };
    // Only fetching and storing the answer depend on `T`; the loop around them is one function
    // for every feed (a generic loop would be compiled again per feed, growing the download).
    let fetch_and_store: FetchAndStore = Box::new(move || {
        let answer = fetch();
        Box::pin(async move {
            let wake = feed.wake.get_untracked();
            let result = answer.await;
            // Filters changed while this was in flight: its answer is for the old ones.
            if feed.wake.get_untracked() != wake {
                return Fetched::Stale;
            }
            let outcome = result.map(|value| feed.data.set(Some(value)));
            settle(feed.updated_at, feed.error, outcome)
        })
    });
    spawn_local_scoped_with_cancellation(run_feed(
        use_live(),
        interest,
        feed.wake,
        min_interval_ms,
        fetch_and_store,
    ));
    feed
}

/// Records how a fetch ended (its value, if any, is stored already).
fn settle(
    updated_at: RwSignal<Option<f64>>,
    error: RwSignal<Option<Failure>>,
    outcome: Result<(), Failure>,
) -> Fetched {
    match outcome {
        Ok(()) => {
            updated_at.set(Some(now_ms()));
            if error.with_untracked(Option::is_some) {
                error.set(None);
            }
            Fetched::Stored
        }
        // The session is over; the login page takes it from here.
        Err(Failure::Unauthorized(_)) => Fetched::SignedOut,
        Err(failure) => {
            if error.with_untracked(|e| e.as_ref() != Some(&failure)) {
                error.set(Some(failure));
            }
            Fetched::Stored
        }
    }
}

/// What one fetch of a feed came to.
enum Fetched {
    /// The answer (or the failure) is on show.
    Stored,
    /// The filters changed meanwhile: fetch again at once.
    Stale,
    /// The session ended: stop.
    SignedOut,
}

type FetchAndStore = Box<dyn Fn() -> std::pin::Pin<Box<dyn Future<Output = Fetched>>>>;

async fn run_feed(
    live: Live,
    interest: Interest,
    wake: RwSignal<u64>,
    min_interval_ms: f64,
    fetch_and_store: FetchAndStore,
) {
    let mut position = live.position();
    loop {
        let woken = wake.get_untracked();
        let started = now_ms();
        match fetch_and_store().await {
            Fetched::Stored => {}
            Fetched::Stale => continue,
            Fetched::SignedOut => return,
        }
        wait_for_change(
            live,
            &mut position,
            interest,
            wake,
            woken,
            started,
            min_interval_ms,
        )
        .await;
    }
}

async fn wait_for_change(
    live: Live,
    position: &mut (u64, u64),
    interest: Interest,
    wake: RwSignal<u64>,
    woken: u64,
    started: f64,
    min_interval_ms: f64,
) {
    loop {
        TimeoutFuture::new(CHECK_MS).await;
        if wake.get_untracked() != woken {
            return;
        }
        let poll_ms = if live.state.get_untracked() == StreamState::Live {
            SLOW_POLL_MS
        } else {
            FAST_POLL_MS
        };
        let elapsed = now_ms() - started;
        if elapsed >= poll_ms {
            return;
        }
        if live.changed_since(position, interest) {
            TimeoutFuture::new(DEBOUNCE_MS).await;
            let rest = min_interval_ms - (now_ms() - started);
            if rest > 0.0 {
                TimeoutFuture::new(rest as u32).await;
            }
            // What arrived meanwhile is covered by the fetch about to start.
            live.changed_since(position, interest);
            return;
        }
    }
}
