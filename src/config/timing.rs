//! The node's deadlines ([`Timing`]) and the connection layer's bounds
//! ([`Limits`]). Values that depend on others are derived here, not set
//! beside them, and [`Timing::validate`] refuses combinations that cannot
//! work before a node starts (docs/api.md, "Command line").

use std::time::Duration;

use super::{parse_duration, ConfigError};

/// Shortest heartbeat tick ([`Timing::heartbeat_every`]) a node accepts:
/// a shorter one would flood the peers with reads.
pub const MIN_HEARTBEAT: Duration = Duration::from_millis(10);

/// Timing knobs of a node.
#[derive(Debug, Clone)]
pub struct Timing {
    /// Every client request ends by then, with 503 if undecided.
    pub request_timeout: Duration,
    /// With a majority of read replies in hand but no conclusion, how long a
    /// GET waits for the rest before it runs a recovery round.
    pub straggler_wait: Duration,
    /// First backoff after a failed round; doubles each retry.
    pub backoff_base: Duration,
    /// Ceiling of the backoff.
    pub backoff_max: Duration,
    /// A PUT tries the fast ballot first only while every peer answered
    /// within this long (the server's heartbeat keeps it fresh); otherwise
    /// a fast attempt could not gather every member and would only add a
    /// wait before the classic round.
    pub fast_path_window: Duration,
    /// Deadline of one call to a peer (the HTTP transport's; the in-memory
    /// network ignores it).
    pub peer_timeout: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            request_timeout: Duration::from_secs(5),
            straggler_wait: Duration::from_millis(50),
            backoff_base: Duration::from_millis(2),
            backoff_max: Duration::from_millis(200),
            fast_path_window: Duration::from_secs(3),
            peer_timeout: Duration::from_secs(1),
        }
    }
}

impl Timing {
    /// The peer-call deadline when none is given: 1 s, or half of
    /// `request_timeout` when that is shorter, so that a request outlives a
    /// peer call that times out and can retry without that peer.
    pub fn default_peer_timeout(request_timeout: Duration) -> Duration {
        Timing::default().peer_timeout.min(request_timeout / 2)
    }

    /// How often the heartbeat pings the peers quiet for as long: a third
    /// of the fast-path window, so a peer that answers is never more than
    /// about two thirds of the window (plus a round trip) stale, inside it.
    pub fn heartbeat_every(&self) -> Duration {
        self.fast_path_window / 3
    }

    /// How recently a peer must have answered for `/v1/status` to call it
    /// reachable: three fast-path windows (nine heartbeats missed) plus one
    /// peer call, 10 s by default. Shorter would flap on a loaded machine.
    pub fn reachable_within(&self) -> Duration {
        self.fast_path_window * 3 + self.peer_timeout
    }

    /// Refuses a combination that cannot work; `limits` are the connection
    /// bounds the node will serve under.
    pub fn validate(&self, limits: &Limits) -> Result<(), ConfigError> {
        for (flag, value) in [
            ("--request-timeout", self.request_timeout),
            ("--peer-timeout", self.peer_timeout),
            ("--fast-path-window", self.fast_path_window),
        ] {
            if value.is_zero() {
                return Err(ConfigError::ZeroDuration(flag));
            }
        }
        if self.peer_timeout >= self.request_timeout {
            return Err(ConfigError::PeerTimeoutNotShorter {
                peer: self.peer_timeout,
                request: self.request_timeout,
            });
        }
        if self.heartbeat_every() < MIN_HEARTBEAT {
            return Err(ConfigError::FastPathWindowTooShort {
                window: self.fast_path_window,
                shortest: MIN_HEARTBEAT * 3,
            });
        }
        if self.backoff_base > self.backoff_max {
            return Err(ConfigError::Backoff {
                base: self.backoff_base,
                max: self.backoff_max,
            });
        }
        if limits.header_timeout.is_zero() || limits.write_timeout.is_zero() {
            return Err(ConfigError::ZeroDuration("the connection limits"));
        }
        Ok(())
    }
}

/// The timing flags of `serve` (docs/api.md, "Command line"); the defaults
/// are [`Timing::default`]'s.
#[derive(clap::Args, Debug, Clone)]
pub struct TimingArgs {
    /// Deadline of every client request (503 after it), e.g. 5s or 800ms.
    #[arg(long, env = "PAXOS_KV_REQUEST_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// Deadline of one call to a peer; shorter than --request-timeout
    /// [default: 1s, or half of --request-timeout when that is shorter].
    #[arg(long, env = "PAXOS_KV_PEER_TIMEOUT", value_parser = parse_duration)]
    pub peer_timeout: Option<Duration>,
    /// A PUT tries the one-round fast ballot only while every peer answered
    /// within this window; the heartbeat pings quiet peers every third of it
    /// (at least 30ms).
    #[arg(long, env = "PAXOS_KV_FAST_PATH_WINDOW", default_value = "3s", value_parser = parse_duration)]
    pub fast_path_window: Duration,
}

impl Default for TimingArgs {
    fn default() -> Self {
        let timing = Timing::default();
        TimingArgs {
            request_timeout: timing.request_timeout,
            peer_timeout: None,
            fast_path_window: timing.fast_path_window,
        }
    }
}

impl TimingArgs {
    /// The [`Timing`] these flags set (not yet validated).
    pub fn timing(&self) -> Timing {
        Timing {
            request_timeout: self.request_timeout,
            peer_timeout: self
                .peer_timeout
                .unwrap_or_else(|| Timing::default_peer_timeout(self.request_timeout)),
            fast_path_window: self.fast_path_window,
            ..Timing::default()
        }
    }
}

/// How much a client may take from a node (see `server.rs`).
#[derive(Clone, Debug)]
pub struct Limits {
    /// Connections served at once; one more is answered 503 and closed.
    pub max_connections: usize,
    /// Deadline to receive a request's headers, counted from when the
    /// connection is ready for a request; also the longest a keep-alive
    /// connection may sit idle.
    pub header_timeout: Duration,
    /// Longest a client may leave a response unread (no write progress)
    /// before the node drops the connection.
    pub write_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            header_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
        }
    }
}

impl Limits {
    /// How long a node keeps an idle pooled connection to a peer: half the
    /// peers' idle close ([`Limits::header_timeout`], the same on every
    /// node), so a pooled connection is not reused just as the peer closes
    /// it.
    pub fn peer_pool_idle(&self) -> Duration {
        self.header_timeout / 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_defaults_are_the_timing_defaults() {
        #[derive(clap::Parser)]
        struct Flags {
            #[command(flatten)]
            timing: TimingArgs,
        }
        let flags = <Flags as clap::Parser>::try_parse_from(["x"]).unwrap();
        let (parsed, default) = (flags.timing.timing(), Timing::default());
        assert_eq!(
            Timing::default_peer_timeout(default.request_timeout),
            default.peer_timeout
        );
        assert_eq!(parsed.request_timeout, default.request_timeout);
        assert_eq!(parsed.peer_timeout, default.peer_timeout);
        assert_eq!(parsed.fast_path_window, default.fast_path_window);
    }

    #[test]
    fn dependent_defaults_keep_their_values() {
        let timing = Timing::default();
        assert_eq!(timing.heartbeat_every(), Duration::from_secs(1));
        assert_eq!(timing.reachable_within(), Duration::from_secs(10));
        assert_eq!(Limits::default().peer_pool_idle(), Duration::from_secs(5));
        assert!(timing.heartbeat_every() < Limits::default().peer_pool_idle());
        timing.validate(&Limits::default()).unwrap();
    }

    #[test]
    fn a_short_request_timeout_shortens_the_default_peer_timeout() {
        let short = TimingArgs {
            request_timeout: Duration::from_secs(1),
            ..TimingArgs::default()
        }
        .timing();
        assert_eq!(short.peer_timeout, Duration::from_millis(500));
        short.validate(&Limits::default()).unwrap();
        let long = TimingArgs {
            request_timeout: Duration::from_secs(30),
            ..TimingArgs::default()
        }
        .timing();
        assert_eq!(long.peer_timeout, Duration::from_secs(1));
    }

    #[test]
    fn combinations_that_cannot_work_are_refused() {
        let limits = Limits::default();
        let refused = |timing: Timing| timing.validate(&limits).unwrap_err().to_string();
        let slow_peer = Timing {
            peer_timeout: Duration::from_secs(5),
            ..Timing::default()
        };
        assert!(refused(slow_peer).contains("--peer-timeout"));
        let tiny_window = Timing {
            fast_path_window: Duration::from_millis(20),
            ..Timing::default()
        };
        assert!(refused(tiny_window).contains("--fast-path-window"));
        let zero = Timing {
            request_timeout: Duration::ZERO,
            ..Timing::default()
        };
        assert!(refused(zero).contains("--request-timeout"));
        let backoff = Timing {
            backoff_base: Duration::from_secs(1),
            ..Timing::default()
        };
        assert!(refused(backoff).contains("backoff"));
    }
}
