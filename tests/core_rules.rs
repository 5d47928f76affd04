//! Table-driven tests of every rule of the pure Paxos core (`paxos_kv::paxos`),
//! plus a randomized agreement check of the real core and the production
//! request coordinator (`src/paxos/coordinator.rs`) under message loss,
//! duplication and reordering.
//!
//! The proptests take their seed from `PAXOS_KV_SEED` (a fresh one when
//! unset) and print the command that replays it (`tests/support/seed.rs`);
//! failing cases are also recorded in `tests/core_rules.proptest-regressions`
//! and replayed first on every run.
//!
//! Each case names the invariant of `docs/design.md` ("inv. N") or the
//! claim of Lamport's *Paxos Made Simple* ("PMS", section 2.2: P1, P1a, P2,
//! P2c, phase 1b/2b) it checks.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};

mod support;

use paxos_kv::paxos::ballot::ROUND_RESERVATION;
use paxos_kv::paxos::{
    acceptor, rebuilt_vote, Accepted, AcceptorState, Ballot, BallotClock, Fault, Fence,
    Incarnation, Known, Members, NodeId, Progress, ReadProgress, ReadRound, Reply, Request, Round,
    Step, FIRST_INCARNATION,
};
use proptest::prelude::*;
use proptest::test_runner::{
    Config, FileFailurePersistence, RngAlgorithm, RngSeed, TestError, TestRng, TestRunner,
};

type Val = &'static str;

fn b(round: u64, node: NodeId) -> Ballot {
    Ballot::new(round, node)
}

fn vote(ballot: Ballot, value: Val) -> Accepted<Val> {
    Accepted { ballot, value }
}

fn state(promised: Ballot, accepted: Option<(Ballot, Val)>, decided: bool) -> AcceptorState<Val> {
    AcceptorState {
        promised,
        accepted: accepted.map(|(ballot, value)| vote(ballot, value)),
        decided,
    }
}

/// A proptest config with `cases` cases (unless `PROPTEST_CASES` says
/// otherwise), a fixed seed (from `PAXOS_KV_SEED` when set, else a fresh
/// one, printed with the command that replays it: `tests/support/seed.rs`),
/// and failing cases recorded in `tests/core_rules.proptest-regressions`
/// (replayed first).
fn seeded_config(test: &str, cases: u32) -> Config {
    let mut cfg = Config::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        cfg.cases = cases;
    }
    cfg.source_file = Some(file!());
    cfg.failure_persistence = Some(Box::new(FileFailurePersistence::WithSource(
        "proptest-regressions",
    )));
    cfg.rng_seed = RngSeed::Fixed(support::seed::seed("core_rules", test));
    eprintln!("{test}: {} cases", cfg.cases);
    cfg
}

/// Panics with proptest's reason and the minimal failing input, on one line
/// (proptest's own Display pretty-prints long inputs one number per line).
fn fail_on<T: std::fmt::Debug>(result: Result<(), TestError<T>>) {
    match result {
        Ok(()) => {}
        Err(TestError::Fail(reason, input)) => {
            panic!("{reason}\nminimal failing input: {input:?}")
        }
        Err(TestError::Abort(reason)) => panic!("proptest aborted: {reason}"),
    }
}

/// The outcome of one acceptor step, flattened: the new state when the step
/// asked for a persist, and the reply (taken out only "once durable").
fn run_step<V>(step: Step<V>) -> (Option<AcceptorState<V>>, Reply<V>) {
    match step {
        Step::Reply(reply) => (None, reply),
        Step::Persist(p) => {
            let (state, reply) = p.reply_once_durable();
            (Some(state), reply)
        }
    }
}

// ---------------------------------------------------------------------------
// Acceptor: one row per rule.
// ---------------------------------------------------------------------------

enum Expect {
    /// State unchanged, reply sent at once.
    Reply(Reply<Val>),
    /// State changed: persist this state, then send this reply.
    Persist(AcceptorState<Val>, Reply<Val>),
}

struct AcceptorCase {
    claim: &'static str,
    before: AcceptorState<Val>,
    request: Request<Val>,
    expect: Expect,
}

fn acceptor_cases() -> Vec<AcceptorCase> {
    use Expect::{Persist, Reply as Now};
    let decided = state(b(4, 2), Some((b(2, 1), "a")), true);
    vec![
        // ---- Prepare (phase 1a -> 1b) ----
        AcceptorCase {
            claim: "inv. 1 / PMS phase 1b: a fresh acceptor promises any real ballot (b > ZERO)",
            before: AcceptorState::default(),
            request: Request::Prepare { ballot: b(1, 1) },
            expect: Persist(
                state(b(1, 1), None, false),
                Reply::Promise { ballot: b(1, 1), accepted: None },
            ),
        },
        AcceptorCase {
            claim: "inv. 1: promise only if b > promised: an EQUAL ballot is rejected, the rejection carries the promise",
            before: state(b(2, 1), None, false),
            request: Request::Prepare { ballot: b(2, 1) },
            expect: Now(Reply::Rejected { ballot: b(2, 1), promised: b(2, 1) }),
        },
        AcceptorCase {
            claim: "inv. 1: promise only if b > promised: a LOWER round is rejected, the rejection carries the promise",
            before: state(b(2, 1), None, false),
            request: Request::Prepare { ballot: b(1, 5) },
            expect: Now(Reply::Rejected { ballot: b(1, 5), promised: b(2, 1) }),
        },
        AcceptorCase {
            claim: "inv. 1: same round, lower node id is a lower ballot and is rejected",
            before: state(b(2, 2), None, false),
            request: Request::Prepare { ballot: b(2, 1) },
            expect: Now(Reply::Rejected { ballot: b(2, 1), promised: b(2, 2) }),
        },
        AcceptorCase {
            claim: "inv. 1 / inv. 2: same round, higher node id is a higher ballot and is promised",
            before: state(b(2, 1), None, false),
            request: Request::Prepare { ballot: b(2, 2) },
            expect: Persist(
                state(b(2, 2), None, false),
                Reply::Promise { ballot: b(2, 2), accepted: None },
            ),
        },
        AcceptorCase {
            claim: "PMS phase 1b: a promise reports the vote cast before and keeps it",
            before: state(b(3, 1), Some((b(2, 1), "a")), false),
            request: Request::Prepare { ballot: b(4, 2) },
            expect: Persist(
                state(b(4, 2), Some((b(2, 1), "a")), false),
                Reply::Promise { ballot: b(4, 2), accepted: Some(vote(b(2, 1), "a")) },
            ),
        },
        AcceptorCase {
            claim: "inv. 1: a prepare with the ballot of the acceptor's own vote is not > promised: rejected",
            before: state(b(3, 1), Some((b(3, 1), "a")), false),
            request: Request::Prepare { ballot: b(3, 1) },
            expect: Now(Reply::Rejected { ballot: b(3, 1), promised: b(3, 1) }),
        },
        AcceptorCase {
            claim: "inv. 1: Ballot::ZERO is never promised (nothing is below 'nothing promised')",
            before: AcceptorState::default(),
            request: Request::Prepare { ballot: Ballot::ZERO },
            expect: Now(Reply::Rejected { ballot: Ballot::ZERO, promised: Ballot::ZERO }),
        },
        // ---- Accept in the fast ballot (Fast Paxos, round 0) ----
        AcceptorCase {
            claim: "Fast Paxos: a fresh acceptor votes for the first fast value it gets",
            before: AcceptorState::default(),
            request: Request::Accept { ballot: Ballot::FAST, value: "a" },
            expect: Persist(
                state(Ballot::FAST, Some((Ballot::FAST, "a")), false),
                Reply::Accepted { ballot: Ballot::FAST },
            ),
        },
        AcceptorCase {
            claim: "Fast Paxos: one fast vote per acceptor: another fast value is refused",
            before: state(Ballot::FAST, Some((Ballot::FAST, "a")), false),
            request: Request::Accept { ballot: Ballot::FAST, value: "b" },
            expect: Now(Reply::Rejected { ballot: Ballot::FAST, promised: Ballot::FAST }),
        },
        AcceptorCase {
            claim: "Fast Paxos: a repeat of the acceptor's own fast vote is answered again, nothing written",
            before: state(Ballot::FAST, Some((Ballot::FAST, "a")), false),
            request: Request::Accept { ballot: Ballot::FAST, value: "a" },
            expect: Now(Reply::Accepted { ballot: Ballot::FAST }),
        },
        AcceptorCase {
            claim: "Fast Paxos / inv. 1: after any promise the fast ballot is below it and refused",
            before: state(b(1, 1), None, false),
            request: Request::Accept { ballot: Ballot::FAST, value: "a" },
            expect: Now(Reply::Rejected { ballot: Ballot::FAST, promised: b(1, 1) }),
        },
        AcceptorCase {
            claim: "Fast Paxos: a classic accept replaces a fast vote (b >= promised)",
            before: state(Ballot::FAST, Some((Ballot::FAST, "a")), false),
            request: Request::Accept { ballot: b(1, 2), value: "b" },
            expect: Persist(
                state(b(1, 2), Some((b(1, 2), "b")), false),
                Reply::Accepted { ballot: b(1, 2) },
            ),
        },
        // ---- Accept (phase 2a -> 2b) ----
        AcceptorCase {
            claim: "PMS P1a: a fresh acceptor accepts (it promised nothing higher); the promise rises to b",
            before: AcceptorState::default(),
            request: Request::Accept { ballot: b(1, 1), value: "a" },
            expect: Persist(
                state(b(1, 1), Some((b(1, 1), "a")), false),
                Reply::Accepted { ballot: b(1, 1) },
            ),
        },
        AcceptorCase {
            claim: "inv. 1 / PMS P1a: accept iff b >= promised: the promised ballot itself is accepted",
            before: state(b(2, 1), None, false),
            request: Request::Accept { ballot: b(2, 1), value: "a" },
            expect: Persist(
                state(b(2, 1), Some((b(2, 1), "a")), false),
                Reply::Accepted { ballot: b(2, 1) },
            ),
        },
        AcceptorCase {
            claim: "inv. 1 / PMS P1a: a ballot below the promise is rejected, the rejection carries the promise",
            before: state(b(2, 1), None, false),
            request: Request::Accept { ballot: b(1, 9), value: "a" },
            expect: Now(Reply::Rejected { ballot: b(1, 9), promised: b(2, 1) }),
        },
        AcceptorCase {
            claim: "inv. 1 / PMS P1a: a rejected accept leaves the earlier vote in place",
            before: state(b(5, 1), Some((b(3, 2), "a")), false),
            request: Request::Accept { ballot: b(4, 3), value: "b" },
            expect: Now(Reply::Rejected { ballot: b(4, 3), promised: b(5, 1) }),
        },
        AcceptorCase {
            claim: "inv. 1 / PMS P1a: accept above the promise replaces the older vote and raises the promise",
            before: state(b(2, 1), Some((b(1, 1), "a")), false),
            request: Request::Accept { ballot: b(5, 3), value: "b" },
            expect: Persist(
                state(b(5, 3), Some((b(5, 3), "b")), false),
                Reply::Accepted { ballot: b(5, 3) },
            ),
        },
        AcceptorCase {
            claim: "inv. 1: a duplicate accept of the vote already durable answers Accepted WITHOUT a persist",
            before: state(b(2, 1), Some((b(2, 1), "a")), false),
            request: Request::Accept { ballot: b(2, 1), value: "a" },
            expect: Now(Reply::Accepted { ballot: b(2, 1) }),
        },
        AcceptorCase {
            claim: "inv. 1: an accept in the promised ballot after an older vote is a new vote: persisted",
            before: state(b(3, 1), Some((b(2, 1), "a")), false),
            request: Request::Accept { ballot: b(3, 1), value: "b" },
            expect: Persist(
                state(b(3, 1), Some((b(3, 1), "b")), false),
                Reply::Accepted { ballot: b(3, 1) },
            ),
        },
        // ---- Read ----
        AcceptorCase {
            claim: "GET step 2: a read of an empty register reports no vote and changes nothing",
            before: state(b(3, 1), None, false),
            request: Request::Read,
            expect: Now(Reply::Vote { accepted: None }),
        },
        AcceptorCase {
            claim: "GET step 2 / inv. 4: a read reports the vote WITH its ballot and changes nothing",
            before: state(b(3, 1), Some((b(2, 2), "a")), false),
            request: Request::Read,
            expect: Now(Reply::Vote { accepted: Some(vote(b(2, 2), "a")) }),
        },
        // ---- Decide ----
        AcceptorCase {
            claim: "inv. 5: Decide records the chosen value durably (fresh acceptor)",
            before: AcceptorState::default(),
            request: Request::Decide { ballot: b(2, 1), value: "a" },
            expect: Persist(state(b(2, 1), Some((b(2, 1), "a")), true), Reply::Ack),
        },
        AcceptorCase {
            claim: "inv. 5: Decide records the chosen value and never lowers the promise",
            before: state(b(7, 3), Some((b(6, 1), "a")), false),
            request: Request::Decide { ballot: b(2, 1), value: "a" },
            expect: Persist(state(b(7, 3), Some((b(2, 1), "a")), true), Reply::Ack),
        },
        // ---- Decided register ----
        AcceptorCase {
            claim: "inv. 5: a decided acceptor answers a higher Prepare with Decided and does not change",
            before: decided.clone(),
            request: Request::Prepare { ballot: b(9, 9) },
            expect: Now(Reply::Decided { ballot: b(2, 1), value: "a" }),
        },
        AcceptorCase {
            claim: "inv. 5: a decided acceptor answers a higher Accept of another value with Decided",
            before: decided.clone(),
            request: Request::Accept { ballot: b(9, 9), value: "b" },
            expect: Now(Reply::Decided { ballot: b(2, 1), value: "a" }),
        },
        AcceptorCase {
            claim: "inv. 5: a decided acceptor answers a lower Accept with Decided (not Rejected)",
            before: decided.clone(),
            request: Request::Accept { ballot: b(1, 1), value: "b" },
            expect: Now(Reply::Decided { ballot: b(2, 1), value: "a" }),
        },
        AcceptorCase {
            claim: "inv. 5: a decided acceptor answers a Read with Decided (so a GET may stop early)",
            before: decided.clone(),
            request: Request::Read,
            expect: Now(Reply::Decided { ballot: b(2, 1), value: "a" }),
        },
        AcceptorCase {
            claim: "inv. 5: a decided register is immutable: a Decide of another value changes nothing",
            before: decided.clone(),
            request: Request::Decide { ballot: b(9, 9), value: "b" },
            expect: Now(Reply::Decided { ballot: b(2, 1), value: "a" }),
        },
        AcceptorCase {
            claim: "inv. 5: a repeated Decide of the same value is answered without a write",
            before: decided,
            request: Request::Decide { ballot: b(2, 1), value: "a" },
            expect: Now(Reply::Decided { ballot: b(2, 1), value: "a" }),
        },
    ]
}

/// Every acceptor rule, one row each (see the `claim` of each row).
#[test]
fn acceptor_rules_table() {
    let mut failures = Vec::new();
    for case in acceptor_cases() {
        let step = acceptor::handle(&case.before, case.request.clone());
        let got = run_step(step);
        let want = match case.expect {
            Expect::Reply(reply) => (None, reply),
            Expect::Persist(state, reply) => (Some(state), reply),
        };
        if got != want {
            failures.push(format!(
                "{}\n    before {:?}\n    request {:?}\n    want {:?}\n    got  {:?}",
                case.claim, case.before, case.request, want, got
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn all_ballots() -> Vec<Ballot> {
    vec![Ballot::ZERO, b(1, 1), b(1, 2), b(2, 1), b(2, 2), b(3, 1)]
}

/// Every acceptor state over a small universe with `accepted.ballot <= promised`
/// (the states an acceptor can reach; Decide keeps it true too).
fn all_states() -> Vec<AcceptorState<Val>> {
    let mut out = Vec::new();
    for promised in all_ballots() {
        for decided in [false, true] {
            if !decided {
                out.push(state(promised, None, false));
            }
            for vb in all_ballots().into_iter().filter(|vb| *vb <= promised) {
                for v in ["a", "b"] {
                    out.push(state(promised, Some((vb, v)), decided));
                }
            }
        }
    }
    out
}

fn all_requests() -> Vec<Request<Val>> {
    let mut out = vec![Request::Read];
    for ballot in all_ballots() {
        out.push(Request::Prepare { ballot });
        for value in ["a", "b"] {
            out.push(Request::Accept { ballot, value });
            out.push(Request::Decide { ballot, value });
        }
    }
    out
}

/// Checks one (state, request) pair against the rules that must hold for
/// every input; returns the broken rules.
fn acceptor_step_violations(before: &AcceptorState<Val>, request: &Request<Val>) -> Vec<String> {
    let mut bad = Vec::new();
    let (after, reply) = run_step(acceptor::handle(before, request.clone()));
    let mut rule = |ok: bool, text: &str| {
        if !ok {
            bad.push(format!(
                "{text}: {before:?} + {request:?} -> {after:?}, {reply:?}"
            ));
        }
    };
    if let Some(after) = &after {
        rule(
            after != before,
            "persist-before-reply: a Persist step must change the state",
        );
        rule(
            !before.decided,
            "inv. 5: a decided acceptor never changes state",
        );
        rule(
            after.promised >= before.promised,
            "inv. 1: the promise never goes down",
        );
        rule(
            after
                .accepted
                .as_ref()
                .is_none_or(|a| a.ballot <= after.promised),
            "PMS P1a: the vote is never above the promise",
        );
        rule(
            before.accepted.is_none() || after.accepted.is_some(),
            "PMS P2c: a vote is never forgotten",
        );
        rule(
            !before.decided || after.decided,
            "inv. 5: decided is forever",
        );
    }
    match (&reply, request) {
        (Reply::Decided { ballot, value }, _) => {
            rule(before.decided, "Decided only from a decided acceptor");
            rule(after.is_none(), "inv. 5: Decided answers write nothing");
            rule(
                before.accepted == Some(vote(*ballot, value)),
                "Decided reports the decided vote",
            );
        }
        (Reply::Promise { ballot, accepted }, Request::Prepare { ballot: asked }) => {
            rule(ballot == asked, "a promise echoes the ballot");
            rule(
                *ballot > before.promised,
                "inv. 1: promise only if b > promised",
            );
            rule(
                after
                    == Some(AcceptorState {
                        promised: *ballot,
                        accepted: before.accepted.clone(),
                        decided: false,
                    }),
                "persist-before-reply: every Promise comes out of a Persist of the new promise",
            );
            rule(
                *accepted == before.accepted,
                "PMS phase 1b: the promise reports the vote cast before",
            );
        }
        (
            Reply::Accepted { ballot },
            Request::Accept {
                ballot: asked,
                value,
            },
        ) => {
            rule(ballot == asked, "Accepted echoes the ballot");
            rule(
                *ballot >= before.promised,
                "inv. 1: accept only if b >= promised",
            );
            rule(
                *ballot != Ballot::FAST
                    || before.accepted.is_none()
                    || before.accepted == Some(vote(Ballot::FAST, value)),
                "Fast Paxos: one fast vote per acceptor, ever (a repeat of it is answered again)",
            );
            let voted = AcceptorState {
                promised: *ballot,
                accepted: Some(vote(*ballot, value)),
                decided: false,
            };
            match &after {
                Some(after) => rule(
                    *after == voted,
                    "persist-before-reply: a new vote is persisted before Accepted",
                ),
                None => rule(
                    *before == voted,
                    "only a duplicate of the durable vote is answered without a persist",
                ),
            }
        }
        (Reply::Rejected { ballot, promised }, Request::Prepare { ballot: asked }) => {
            rule(ballot == asked, "a rejection echoes the ballot");
            rule(
                *promised == before.promised,
                "a rejection carries the promise",
            );
            rule(
                *asked <= before.promised,
                "inv. 1: reject a prepare only if b <= promised",
            );
            rule(after.is_none(), "a rejection writes nothing");
        }
        (Reply::Rejected { ballot, promised }, Request::Accept { ballot: asked, .. }) => {
            rule(ballot == asked, "a rejection echoes the ballot");
            rule(
                *promised == before.promised,
                "a rejection carries the promise",
            );
            let other_fast_vote = *asked == Ballot::FAST
                && before.accepted.is_some()
                && !matches!(request, Request::Accept { value, .. }
                    if before.accepted == Some(vote(Ballot::FAST, value)));
            rule(
                *asked < before.promised || other_fast_vote,
                "inv. 1: reject an accept only if b < promised, or b is the fast ballot \
                 and this acceptor already voted (for another value)",
            );
            rule(after.is_none(), "a rejection writes nothing");
        }
        (Reply::Vote { accepted }, Request::Read) => {
            rule(*accepted == before.accepted, "a read reports the vote");
            rule(after.is_none(), "a read writes nothing");
        }
        (Reply::Ack, Request::Decide { ballot, value }) => rule(
            after
                == Some(AcceptorState {
                    promised: before.promised.max(*ballot),
                    accepted: Some(vote(*ballot, value)),
                    decided: true,
                }),
            "inv. 5: Decide is acknowledged only once the decided value is persisted",
        ),
        _ => rule(false, "reply kind does not answer the request kind"),
    }
    bad
}

/// The acceptor rules hold for EVERY reachable state and request of a small
/// universe (6 ballots, 2 values): promise iff b > promised, accept iff
/// b >= promised, a state change is always a `Step::Persist` and an unchanged
/// state a `Step::Reply` (persist-before-reply in the types), the promise
/// never decreases, a vote is never lost, decided never changes (inv. 1, 5).
#[test]
fn acceptor_rules_hold_for_every_state_and_request() {
    let mut checked = 0;
    let mut failures = Vec::new();
    for before in all_states() {
        for request in all_requests() {
            failures.extend(acceptor_step_violations(&before, &request));
            checked += 1;
        }
    }
    assert!(checked > 1000, "the universe is too small: {checked}");
    assert!(
        failures.is_empty(),
        "{} violations, first ones:\n{}",
        failures.len(),
        failures[..failures.len().min(20)].join("\n")
    );
}

// ---------------------------------------------------------------------------
// Proposer round.
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Ev {
    /// A reply from a member.
    R(NodeId, Reply<Val>),
    /// The driver gives up on a member for this phase.
    Down(NodeId),
}

fn promise(from: NodeId, ballot: Ballot, accepted: Option<(Ballot, Val)>) -> Ev {
    Ev::R(
        from,
        Reply::Promise {
            ballot,
            accepted: accepted.map(|(b, v)| vote(b, v)),
        },
    )
}

fn accepted(from: NodeId, ballot: Ballot) -> Ev {
    Ev::R(from, Reply::Accepted { ballot })
}

fn rejected(from: NodeId, ballot: Ballot, promised: Ballot) -> Ev {
    Ev::R(from, Reply::Rejected { ballot, promised })
}

struct RoundCase {
    claim: &'static str,
    members: Vec<NodeId>,
    own: Option<Val>,
    events: Vec<Ev>,
    /// The exact `Progress` returned by each event, in order.
    expect: Vec<Progress<Val>>,
}

/// The ballot of every round in the table.
const RB: Ballot = Ballot::new(5, 1);

fn send(value: Val) -> Progress<Val> {
    Progress::Send(Request::Accept { ballot: RB, value })
}

fn chosen(value: Val, proposed: bool) -> Progress<Val> {
    Progress::Chosen {
        ballot: RB,
        value,
        proposed,
    }
}

fn round_cases() -> Vec<RoundCase> {
    use Progress::{Empty, Preempted, Stalled, Wait};
    let m3 = vec![1, 2, 3];
    let m5 = vec![1, 2, 3, 4, 5];
    let mine = Some("mine");
    vec![
        RoundCase {
            claim: "Fast Paxos recovery: the whole promising majority voted fast for x: x may be chosen, propose it",
            members: m3.clone(),
            own: mine,
            events: vec![
                promise(1, RB, Some((Ballot::FAST, "x"))),
                promise(2, RB, Some((Ballot::FAST, "x"))),
            ],
            expect: vec![Wait, send("x")],
        },
        RoundCase {
            claim: "Fast Paxos recovery: fast votes differ in the majority: nothing was chosen fast, own value",
            members: m3.clone(),
            own: mine,
            events: vec![
                promise(1, RB, Some((Ballot::FAST, "x"))),
                promise(2, RB, Some((Ballot::FAST, "y"))),
                accepted(1, RB),
                accepted(2, RB),
            ],
            expect: vec![Wait, send("mine"), Wait, chosen("mine", true)],
        },
        RoundCase {
            claim: "Fast Paxos recovery: a promiser without a fast vote proves x was not chosen fast: own value",
            members: m3.clone(),
            own: mine,
            events: vec![promise(1, RB, Some((Ballot::FAST, "x"))), promise(2, RB, None)],
            expect: vec![Wait, send("mine")],
        },
        RoundCase {
            claim: "Fast Paxos recovery without a value of its own: finish the instance with a fast value found",
            members: m3.clone(),
            own: None,
            events: vec![promise(1, RB, Some((Ballot::FAST, "x"))), promise(2, RB, None)],
            expect: vec![Wait, send("x")],
        },
        RoundCase {
            claim: "inv. 3: a classic vote outranks fast votes, unanimous or not",
            members: m3.clone(),
            own: mine,
            events: vec![
                promise(1, RB, Some((Ballot::FAST, "x"))),
                promise(2, RB, Some((b(1, 3), "y"))),
            ],
            expect: vec![Wait, send("y")],
        },
        RoundCase {
            claim: "inv. 3 / PMS P2c: no promise carried a vote: phase 2 proposes the client's value, proposed = true",
            members: m3.clone(),
            own: mine,
            events: vec![promise(1, RB, None), promise(2, RB, None), accepted(1, RB), accepted(2, RB)],
            expect: vec![Wait, send("mine"), Wait, chosen("mine", true)],
        },
        RoundCase {
            claim: "inv. 3 / PMS P2c: phase 2 takes the value of the HIGHEST-ballot vote (seen last), proposed = false",
            members: m3.clone(),
            own: mine,
            events: vec![
                promise(1, RB, Some((b(2, 1), "x"))),
                promise(2, RB, Some((b(3, 2), "y"))),
                accepted(1, RB),
                accepted(3, RB),
            ],
            expect: vec![Wait, send("y"), Wait, chosen("y", false)],
        },
        RoundCase {
            claim: "inv. 3 / PMS P2c: the highest-ballot vote wins whatever the order of arrival",
            members: m3.clone(),
            own: mine,
            events: vec![promise(1, RB, Some((b(3, 2), "y"))), promise(2, RB, Some((b(2, 1), "x")))],
            expect: vec![Wait, send("y")],
        },
        RoundCase {
            claim: "inv. 3: one vote among empty promises is enough to override the client's value",
            members: m3.clone(),
            own: mine,
            events: vec![promise(3, RB, None), promise(1, RB, Some((b(1, 3), "x")))],
            expect: vec![Wait, send("x")],
        },
        RoundCase {
            claim: "inv. 3: a found vote equal to the client's bytes is still 'found', proposed = false",
            members: m3.clone(),
            own: mine,
            events: vec![
                promise(1, RB, Some((b(4, 2), "mine"))),
                promise(2, RB, None),
                accepted(1, RB),
                accepted(2, RB),
            ],
            expect: vec![Wait, send("mine"), Wait, chosen("mine", false)],
        },
        RoundCase {
            claim: "inv. 3 + ballot order: (4,2) > (4,1) > (2,3) > (1,1); the highest wins among 5 members",
            members: m5.clone(),
            own: mine,
            events: vec![
                promise(1, RB, Some((b(4, 1), "b"))),
                promise(4, RB, Some((b(4, 2), "d"))),
                promise(5, RB, Some((b(1, 1), "a"))),
            ],
            expect: vec![Wait, Wait, send("d")],
        },
        RoundCase {
            claim: "inv. 3 / PMS: phase 2 starts with exactly a majority; a later promise (even with a vote) is ignored",
            members: m3.clone(),
            own: mine,
            events: vec![
                promise(1, RB, None),
                promise(2, RB, None),
                promise(3, RB, Some((b(4, 1), "late"))),
                accepted(1, RB),
                accepted(2, RB),
            ],
            expect: vec![Wait, send("mine"), Wait, Wait, chosen("mine", true)],
        },
        RoundCase {
            claim: "recovery round (own = None): a promising majority with no vote ends Empty; later replies ignored",
            members: m3.clone(),
            own: None,
            events: vec![promise(1, RB, None), promise(2, RB, None), promise(3, RB, Some((b(1, 1), "x")))],
            expect: vec![Wait, Empty, Wait],
        },
        RoundCase {
            claim: "recovery round (own = None): a found vote is finished in phase 2, proposed = false",
            members: m3.clone(),
            own: None,
            events: vec![
                promise(1, RB, None),
                promise(3, RB, Some((b(2, 2), "x"))),
                accepted(2, RB),
                accepted(3, RB),
            ],
            expect: vec![Wait, send("x"), Wait, chosen("x", false)],
        },
        RoundCase {
            claim: "inv. 4: Chosen needs a majority of Accepted for ITS ballot; other ballots' Accepted are ignored",
            members: m3.clone(),
            own: mine,
            events: vec![
                promise(1, RB, None),
                promise(2, RB, None),
                accepted(1, b(4, 1)),
                accepted(2, b(6, 1)),
                accepted(3, b(5, 2)),
                accepted(1, RB),
                accepted(2, RB),
            ],
            expect: vec![Wait, send("mine"), Wait, Wait, Wait, Wait, chosen("mine", true)],
        },
        RoundCase {
            claim: "inv. 4: a duplicate Accepted from one member counts once",
            members: m3.clone(),
            own: mine,
            events: vec![
                promise(1, RB, None),
                promise(2, RB, None),
                accepted(1, RB),
                accepted(1, RB),
                accepted(3, RB),
            ],
            expect: vec![Wait, send("mine"), Wait, Wait, chosen("mine", true)],
        },
        RoundCase {
            claim: "inv. 4: replies from non-members are ignored in both phases",
            members: m3.clone(),
            own: mine,
            events: vec![
                promise(9, RB, Some((b(4, 4), "evil"))),
                promise(1, RB, None),
                promise(2, RB, None),
                accepted(9, RB),
                accepted(1, RB),
                Ev::R(9, Reply::Decided { ballot: b(1, 1), value: "evil" }),
                accepted(2, RB),
            ],
            expect: vec![Wait, Wait, send("mine"), Wait, Wait, Wait, chosen("mine", true)],
        },
        RoundCase {
            claim: "inv. 4: an Accepted that arrives before phase 2 is stale and does not count",
            members: m3.clone(),
            own: mine,
            events: vec![
                accepted(1, RB),
                accepted(2, RB),
                promise(1, RB, None),
                promise(2, RB, None),
                accepted(1, RB),
                accepted(2, RB),
            ],
            expect: vec![Wait, Wait, Wait, send("mine"), Wait, chosen("mine", true)],
        },
        RoundCase {
            claim: "PMS phase 2a: a majority of promises means distinct members: a duplicate promise counts once",
            members: m3.clone(),
            own: mine,
            events: vec![promise(1, RB, None), promise(1, RB, None), promise(2, RB, None)],
            expect: vec![Wait, Wait, send("mine")],
        },
        RoundCase {
            claim: "PMS phase 2a: promises for another ballot (stale rounds) are ignored",
            members: m3.clone(),
            own: mine,
            events: vec![
                promise(1, b(4, 1), Some((b(3, 3), "old"))),
                promise(2, b(6, 2), None),
                promise(1, RB, None),
                promise(2, RB, None),
            ],
            expect: vec![Wait, Wait, Wait, send("mine")],
        },
        RoundCase {
            claim: "PMS: a Promise arriving during phase 2 is ignored",
            members: m3.clone(),
            own: mine,
            events: vec![promise(1, RB, None), promise(2, RB, None), promise(3, RB, Some((b(4, 4), "z")))],
            expect: vec![Wait, send("mine"), Wait],
        },
        RoundCase {
            claim: "a rejection (promised > ballot) while a majority is reachable does not end the round",
            members: m3.clone(),
            own: mine,
            events: vec![rejected(1, RB, b(7, 2)), promise(2, RB, None), promise(3, RB, None)],
            expect: vec![Wait, Wait, send("mine")],
        },
        RoundCase {
            claim: "rejections put a majority out of reach: Preempted with the HIGHEST promise seen",
            members: m3.clone(),
            own: mine,
            events: vec![rejected(1, RB, b(7, 2)), rejected(2, RB, b(6, 3))],
            expect: vec![Wait, Preempted { seen: b(7, 2) }],
        },
        RoundCase {
            claim: "a rejection whose promise is not above the ballot (a duplicate prepare) is no preemption",
            members: m3.clone(),
            own: mine,
            events: vec![
                rejected(1, RB, RB),
                rejected(2, RB, RB),
                rejected(3, RB, b(4, 1)),
                promise(1, RB, None),
                promise(2, RB, None),
            ],
            expect: vec![Wait, Wait, Wait, Wait, send("mine")],
        },
        RoundCase {
            claim: "rejections of another ballot (stale rounds) are ignored",
            members: m3.clone(),
            own: mine,
            events: vec![
                rejected(1, b(4, 1), b(7, 1)),
                rejected(2, b(4, 1), b(7, 1)),
                promise(1, RB, None),
                promise(2, RB, None),
            ],
            expect: vec![Wait, Wait, Wait, send("mine")],
        },
        RoundCase {
            claim: "5 members: Preempted only once the THIRD rejection makes a majority impossible",
            members: m5.clone(),
            own: mine,
            events: vec![
                rejected(1, RB, b(6, 1)),
                rejected(2, RB, b(8, 1)),
                rejected(3, RB, b(7, 1)),
            ],
            expect: vec![Wait, Wait, Preempted { seen: b(8, 1) }],
        },
        RoundCase {
            claim: "a rejection plus an unreachable member: majority out of reach, Preempted",
            members: m3.clone(),
            own: mine,
            events: vec![Ev::Down(3), rejected(1, RB, b(9, 2))],
            expect: vec![Wait, Preempted { seen: b(9, 2) }],
        },
        RoundCase {
            claim: "unreachable members only (no higher promise seen): Stalled",
            members: m3.clone(),
            own: mine,
            events: vec![Ev::Down(2), Ev::Down(3)],
            expect: vec![Wait, Stalled],
        },
        RoundCase {
            claim: "Stalled after rejections whose promise is not above the ballot",
            members: m3.clone(),
            own: mine,
            events: vec![rejected(1, RB, RB), Ev::Down(1), Ev::Down(2)],
            expect: vec![Wait, Wait, Stalled],
        },
        RoundCase {
            claim: "a member that already promised keeps its answer when later reported unreachable",
            members: m3.clone(),
            own: mine,
            events: vec![promise(1, RB, None), Ev::Down(1), Ev::Down(2), promise(3, RB, None)],
            expect: vec![Wait, Wait, Wait, send("mine")],
        },
        RoundCase {
            claim: "unreachable non-members and repeated reports are ignored",
            members: m3.clone(),
            own: mine,
            events: vec![Ev::Down(9), Ev::Down(8), Ev::Down(2), Ev::Down(2)],
            expect: vec![Wait, Wait, Wait, Wait],
        },
        RoundCase {
            claim: "a member unreachable in phase 1 may accept in phase 2 (each phase counts afresh)",
            members: m3.clone(),
            own: mine,
            events: vec![
                Ev::Down(3),
                promise(1, RB, None),
                promise(2, RB, None),
                accepted(3, RB),
                accepted(1, RB),
            ],
            expect: vec![Wait, Wait, send("mine"), Wait, chosen("mine", true)],
        },
        RoundCase {
            claim: "phase 2 rejections put a majority out of reach: Preempted with the highest promise",
            members: m3.clone(),
            own: mine,
            events: vec![
                promise(1, RB, None),
                promise(2, RB, None),
                rejected(2, RB, b(8, 3)),
                rejected(3, RB, b(6, 1)),
            ],
            expect: vec![Wait, send("mine"), Wait, Preempted { seen: b(8, 3) }],
        },
        RoundCase {
            claim: "phase 2: one acceptance plus two unreachable members: Stalled, never Chosen",
            members: m3.clone(),
            own: mine,
            events: vec![
                promise(1, RB, None),
                promise(2, RB, None),
                accepted(1, RB),
                Ev::Down(2),
                Ev::Down(3),
                accepted(2, RB),
            ],
            expect: vec![Wait, send("mine"), Wait, Wait, Stalled, Wait],
        },
        RoundCase {
            claim: "inv. 5: a Decided reply in phase 1 ends the round with the decided value, proposed = false",
            members: m3.clone(),
            own: mine,
            events: vec![
                promise(1, RB, None),
                Ev::R(2, Reply::Decided { ballot: b(3, 3), value: "old" }),
                promise(3, RB, None),
            ],
            expect: vec![
                Wait,
                Progress::Chosen { ballot: b(3, 3), value: "old", proposed: false },
                Wait,
            ],
        },
        RoundCase {
            claim: "inv. 5: a Decided reply in phase 2 ends the round with the decided value",
            members: m3.clone(),
            own: mine,
            events: vec![
                promise(1, RB, None),
                promise(2, RB, None),
                Ev::R(3, Reply::Decided { ballot: b(2, 2), value: "old" }),
            ],
            expect: vec![
                Wait,
                send("mine"),
                Progress::Chosen { ballot: b(2, 2), value: "old", proposed: false },
            ],
        },
        RoundCase {
            claim: "a finished round ignores everything that comes after",
            members: m3.clone(),
            own: mine,
            events: vec![
                promise(1, RB, None),
                promise(2, RB, None),
                accepted(1, RB),
                accepted(2, RB),
                accepted(3, RB),
                Ev::R(3, Reply::Decided { ballot: b(9, 9), value: "other" }),
                rejected(3, RB, b(9, 9)),
                Ev::Down(3),
            ],
            expect: vec![Wait, send("mine"), Wait, chosen("mine", true), Wait, Wait, Wait, Wait],
        },
        RoundCase {
            claim: "replies that answer no request of a round (Vote, Ack) are ignored",
            members: m3.clone(),
            own: mine,
            events: vec![
                Ev::R(1, Reply::Vote { accepted: Some(vote(b(4, 1), "v")) }),
                Ev::R(2, Reply::Ack),
                promise(1, RB, None),
                promise(2, RB, None),
            ],
            expect: vec![Wait, Wait, Wait, send("mine")],
        },
        RoundCase {
            claim: "a one-member cluster: quorum 1, one promise then one acceptance",
            members: vec![7],
            own: mine,
            events: vec![promise(7, RB, None), accepted(7, RB)],
            expect: vec![send("mine"), chosen("mine", true)],
        },
    ]
}

/// Every proposer-round rule, one row each (see the `claim` of each row).
#[test]
fn proposer_round_table() {
    let mut failures = Vec::new();
    for case in round_cases() {
        assert_eq!(
            case.events.len(),
            case.expect.len(),
            "bad row: {}",
            case.claim
        );
        let (mut round, prepare) = Round::start(RB, Members::new(case.members.clone()), case.own);
        assert_eq!(prepare, Request::Prepare { ballot: RB }, "{}", case.claim);
        assert_eq!(round.ballot(), RB);
        let got: Vec<Progress<Val>> = case
            .events
            .iter()
            .map(|ev| match ev.clone() {
                Ev::R(from, reply) => round.on_reply(from, reply),
                Ev::Down(from) => round.on_unreachable(from),
            })
            .collect();
        if got != case.expect {
            failures.push(format!(
                "{}\n    events {:?}\n    want {:?}\n    got  {:?}",
                case.claim, case.events, case.expect, got
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------
// Quorum read.
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum RdEv {
    V(NodeId, Option<(Ballot, Val)>),
    R(NodeId, Reply<Val>),
    Down(NodeId),
    GiveUp,
}

struct ReadCase {
    claim: &'static str,
    members: Vec<NodeId>,
    events: Vec<RdEv>,
    expect: Vec<ReadProgress<Val>>,
}

fn read_cases() -> Vec<ReadCase> {
    use RdEv::{Down, GiveUp, R, V};
    use ReadProgress::{Empty, Recover, Stalled, Wait};
    let m3 = vec![1, 2, 3];
    let m5 = vec![1, 2, 3, 4, 5];
    let ch = |ballot, value| ReadProgress::Chosen { ballot, value };
    vec![
        ReadCase {
            claim: "inv. 4: equal values under DIFFERENT ballots prove nothing: Recover, never Chosen",
            members: m3.clone(),
            events: vec![
                V(1, Some((b(1, 1), "a"))),
                V(2, Some((b(2, 2), "a"))),
                V(3, Some((b(3, 3), "a"))),
            ],
            expect: vec![Wait, Wait, Recover],
        },
        ReadCase {
            claim: "inv. 4 / GET step 3: a majority voting in the SAME ballot is Chosen",
            members: m3.clone(),
            events: vec![V(1, Some((b(2, 1), "a"))), V(3, Some((b(2, 1), "a")))],
            expect: vec![Wait, ch(b(2, 1), "a")],
        },
        ReadCase {
            claim: "GET step 3: a same-ballot majority is Chosen even after a 'no vote' reply",
            members: m3.clone(),
            events: vec![V(1, None), V(2, Some((b(2, 1), "a"))), V(3, Some((b(2, 1), "a")))],
            expect: vec![Wait, Wait, ch(b(2, 1), "a")],
        },
        ReadCase {
            claim: "GET step 4 / inv. 5 (404 needs a majority): a majority of 'no vote' is Empty",
            members: m3.clone(),
            events: vec![V(2, None), V(3, None)],
            expect: vec![Wait, Empty],
        },
        ReadCase {
            claim: "GET step 4: one 'no vote' and one vote is not yet Empty nor Recover while a reply may tip it",
            members: m3.clone(),
            events: vec![V(1, None), V(2, Some((b(1, 1), "a"))), V(3, Some((b(2, 1), "b")))],
            expect: vec![Wait, Wait, Recover],
        },
        ReadCase {
            claim: "GET step 3 / inv. 5: any Decided reply is Chosen at once",
            members: m3.clone(),
            events: vec![R(2, Reply::Decided { ballot: b(3, 1), value: "d" })],
            expect: vec![ch(b(3, 1), "d")],
        },
        ReadCase {
            claim: "inv. 5: a Decided reply wins over disagreeing votes already in hand",
            members: m3.clone(),
            events: vec![
                V(1, Some((b(1, 1), "a"))),
                R(2, Reply::Decided { ballot: b(3, 1), value: "d" }),
            ],
            expect: vec![Wait, ch(b(3, 1), "d")],
        },
        ReadCase {
            claim: "inv. 4, fast ballot: a majority of equal fast votes is NOT chosen (a fast value needs every member)",
            members: m3.clone(),
            events: vec![
                V(1, Some((Ballot::FAST, "x"))),
                V(2, Some((Ballot::FAST, "x"))),
                GiveUp,
            ],
            expect: vec![Wait, Wait, Recover],
        },
        ReadCase {
            claim: "inv. 4, fast ballot: every member reports the same fast vote: chosen",
            members: m3.clone(),
            events: vec![
                V(1, Some((Ballot::FAST, "x"))),
                V(2, Some((Ballot::FAST, "x"))),
                V(3, Some((Ballot::FAST, "x"))),
            ],
            expect: vec![Wait, Wait, ch(Ballot::FAST, "x")],
        },
        ReadCase {
            claim: "inv. 4, fast ballot: two different fast votes: no value can reach every member, Recover at once",
            members: m3.clone(),
            events: vec![V(1, Some((Ballot::FAST, "x"))), V(2, Some((Ballot::FAST, "y")))],
            expect: vec![Wait, Recover],
        },
        ReadCase {
            claim: "GET step 5: give_up with a majority in hand and no conclusion: Recover",
            members: m3.clone(),
            events: vec![V(1, None), V(2, Some((b(1, 1), "a"))), GiveUp],
            expect: vec![Wait, Wait, Recover],
        },
        ReadCase {
            claim: "give_up without a majority of replies: Stalled (a 404 always needs a majority)",
            members: m3.clone(),
            events: vec![V(1, None), GiveUp],
            expect: vec![Wait, Stalled],
        },
        ReadCase {
            claim: "unreachable members leave no majority: Stalled",
            members: m3.clone(),
            events: vec![Down(2), Down(3)],
            expect: vec![Wait, Stalled],
        },
        ReadCase {
            claim: "one vote and one 'no vote' with the third member down: Recover",
            members: m3.clone(),
            events: vec![Down(3), V(1, None), V(2, Some((b(1, 1), "a")))],
            expect: vec![Wait, Wait, Recover],
        },
        ReadCase {
            claim: "a duplicate vote from one member counts once",
            members: m3.clone(),
            events: vec![
                V(1, Some((b(2, 1), "a"))),
                V(1, Some((b(2, 1), "a"))),
                V(2, Some((b(2, 1), "a"))),
            ],
            expect: vec![Wait, Wait, ch(b(2, 1), "a")],
        },
        ReadCase {
            claim: "a duplicate 'no vote' counts once (no false 404)",
            members: m3.clone(),
            events: vec![V(1, None), V(1, None), V(2, Some((b(2, 1), "a")))],
            expect: vec![Wait, Wait, Wait],
        },
        ReadCase {
            claim: "non-member replies are ignored (votes, 'no vote' and Decided)",
            members: m3.clone(),
            events: vec![
                V(9, Some((b(2, 1), "a"))),
                V(8, None),
                R(7, Reply::Decided { ballot: b(1, 7), value: "evil" }),
                V(1, Some((b(2, 1), "a"))),
                Down(9),
                V(2, None),
            ],
            expect: vec![Wait, Wait, Wait, Wait, Wait, Wait],
        },
        ReadCase {
            claim: "replies that do not answer a read (Promise, Accepted, Rejected, Ack) are ignored",
            members: m3.clone(),
            events: vec![
                R(1, Reply::Promise { ballot: b(1, 1), accepted: None }),
                R(2, Reply::Accepted { ballot: b(1, 1) }),
                R(3, Reply::Rejected { ballot: b(1, 1), promised: b(2, 1) }),
                R(1, Reply::Ack),
                V(1, None),
                V(2, None),
            ],
            expect: vec![Wait, Wait, Wait, Wait, Wait, Empty],
        },
        ReadCase {
            claim: "a concluded read ignores later replies and give_up",
            members: m3.clone(),
            events: vec![V(1, None), V(2, None), V(3, Some((b(1, 1), "a"))), GiveUp, Down(3)],
            expect: vec![Wait, Empty, Wait, Wait, Wait],
        },
        ReadCase {
            claim: "a reply from a member already given up on is ignored",
            members: m3.clone(),
            events: vec![
                Down(1),
                V(1, Some((b(2, 1), "a"))),
                V(2, Some((b(2, 1), "a"))),
                V(3, Some((b(2, 1), "a"))),
            ],
            expect: vec![Wait, Wait, Wait, ch(b(2, 1), "a")],
        },
        ReadCase {
            claim: "a member that voted keeps its vote when later reported unreachable",
            members: m3.clone(),
            events: vec![V(1, Some((b(2, 1), "a"))), Down(1), Down(2), V(3, Some((b(2, 1), "a")))],
            expect: vec![Wait, Wait, Wait, ch(b(2, 1), "a")],
        },
        ReadCase {
            claim: "5 members: two same-ballot votes, two 'no vote', one other: no majority agrees: Recover",
            members: m5.clone(),
            events: vec![
                V(1, Some((b(1, 1), "a"))),
                V(2, Some((b(1, 1), "a"))),
                V(3, None),
                V(4, None),
                V(5, Some((b(2, 1), "b"))),
            ],
            expect: vec![Wait, Wait, Wait, Wait, Recover],
        },
        ReadCase {
            claim: "5 members: three votes in one ballot are Chosen",
            members: m5.clone(),
            events: vec![
                V(1, None),
                V(2, Some((b(3, 1), "a"))),
                V(4, Some((b(3, 1), "a"))),
                V(5, Some((b(3, 1), "a"))),
            ],
            expect: vec![Wait, Wait, Wait, ch(b(3, 1), "a")],
        },
        ReadCase {
            claim: "5 members: two 'no vote' are not a majority: no Empty before the third",
            members: m5,
            events: vec![V(1, None), V(2, None), V(3, None)],
            expect: vec![Wait, Wait, Empty],
        },
    ]
}

/// Every quorum-read rule, one row each (docs/design.md "GET", inv. 4).
#[test]
fn read_round_table() {
    let mut failures = Vec::new();
    for case in read_cases() {
        assert_eq!(
            case.events.len(),
            case.expect.len(),
            "bad row: {}",
            case.claim
        );
        let mut read = ReadRound::start(Members::new(case.members.clone()));
        let got: Vec<ReadProgress<Val>> = case
            .events
            .iter()
            .map(|ev| match ev.clone() {
                RdEv::V(from, v) => read.on_reply(
                    from,
                    Reply::Vote {
                        accepted: v.map(|(b, v)| vote(b, v)),
                    },
                ),
                RdEv::R(from, reply) => read.on_reply(from, reply),
                RdEv::Down(from) => read.on_unreachable(from),
                RdEv::GiveUp => read.give_up(),
            })
            .collect();
        if got != case.expect {
            failures.push(format!(
                "{}\n    events {:?}\n    want {:?}\n    got  {:?}",
                case.claim, case.events, case.expect, got
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------
// Ballot clock and members.
// ---------------------------------------------------------------------------

/// Inv. 2: ballots from one clock strictly increase, carry the node id and
/// respect hints (each round is above the hint); a reservation is asked for
/// exactly when the round passes the durable mark.
#[test]
fn ballot_clock_is_increasing_and_respects_hints() {
    let node = 3;
    let mut clock = BallotClock::restore(node, 0);
    assert_eq!(clock.node(), node);
    let mut mark = 0u64;
    let mut last = Ballot::ZERO;
    // (hint, expected round)
    let table = [
        (0, 1),
        (0, 2),
        (10, 11),
        (5, 12),
        (12, 13),
        (ROUND_RESERVATION + 100, ROUND_RESERVATION + 101),
        (0, ROUND_RESERVATION + 102),
    ];
    for (hint, round) in table {
        let next = clock.next(hint);
        assert_eq!(next.ballot, Ballot::new(round, node), "hint {hint}");
        assert!(next.ballot > last);
        assert!(next.ballot.round > hint);
        match next.reserve {
            Some(new_mark) => {
                assert!(round > mark, "reserved although inside the mark");
                assert!(new_mark >= round, "the new mark must cover the ballot");
                mark = new_mark;
            }
            None => assert!(
                round <= mark,
                "round {round} above durable mark {mark} without a reservation"
            ),
        }
        last = next.ballot;
    }
}

/// Inv. 2 across restarts: a clock restored from its persisted mark never
/// hands out a ballot used before the crash, and each ballot handed out is
/// covered by a mark persisted before its use.
#[test]
fn ballot_clock_never_repeats_across_restores() {
    let cfg = seeded_config("ballot_clock_never_repeats_across_restores", 256);
    let lives = prop::collection::vec(
        prop::collection::vec(
            prop_oneof![Just(0u64), 0u64..100, 0u64..(4 * ROUND_RESERVATION)],
            0..20,
        ),
        1..6,
    );
    let mut runner = TestRunner::new(cfg);
    let result = runner.run(&lives, |lives| {
        let mut durable = 0u64;
        let mut used = BTreeSet::new();
        let mut last = Ballot::ZERO;
        for hints in lives {
            let mut clock = BallotClock::restore(2, durable);
            for hint in hints {
                let next = clock.next(hint);
                if let Some(mark) = next.reserve {
                    durable = mark; // persisted before use
                }
                prop_assert!(
                    next.ballot.round <= durable,
                    "ballot above the durable mark"
                );
                prop_assert!(next.ballot.round > hint);
                prop_assert!(next.ballot > last, "not increasing across lives");
                prop_assert!(
                    used.insert(next.ballot),
                    "ballot {} used twice",
                    next.ballot
                );
                last = next.ballot;
            }
        }
        Ok(())
    });
    fail_on(result);
}

/// Inv. 2 at the edge of the round space: a hint near `u64::MAX` (a peer's
/// promise) must not make the clock hand out the same ballot twice. The
/// clock may refuse (panic) once rounds run out, but never repeat.
#[test]
fn ballot_clock_never_repeats_when_rounds_run_out() {
    let mut clock = BallotClock::restore(1, 0);
    let mut used = BTreeSet::new();
    for hint in [u64::MAX - 3, 0, 0, 0, u64::MAX] {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| clock.next(hint)));
        match outcome {
            Ok(next) => assert!(
                used.insert(next.ballot),
                "invariant 2 broken: ballot {} handed out twice (hint {hint})",
                next.ballot
            ),
            Err(_) => return, // refusing is fine; repeating is not
        }
    }
}

/// Quorums are strict majorities: quorum(n) = n/2 + 1 for 1..=7 members, so
/// any two quorums intersect (2q > n) and a quorum exists when all are up.
#[test]
fn members_quorum_is_a_strict_majority() {
    let expected = [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (6, 4), (7, 4)];
    for (n, q) in expected {
        let members = Members::new(1..=n as NodeId);
        assert_eq!(members.len(), n);
        assert!(!members.is_empty());
        assert_eq!(members.quorum(), q, "quorum of {n}");
        assert!(2 * q > n, "two quorums of {n} must intersect");
        assert!(q <= n);
        assert!(
            2 * (q - 1) <= n,
            "quorum of {n} is not the smallest majority"
        );
    }
}

/// Members are a set: duplicates collapse, ids iterate in order, `contains`
/// tells members from strangers.
#[test]
fn members_are_a_set() {
    let m = Members::new([3, 1, 3, 2, 1]);
    assert_eq!(m.len(), 3);
    assert_eq!(m.quorum(), 2);
    assert_eq!(m.iter().collect::<Vec<_>>(), vec![1, 2, 3]);
    assert!(m.contains(2));
    assert!(!m.contains(4));
    assert!(!m.contains(0));
}

/// A cluster has at least one member.
#[test]
#[should_panic(expected = "at least one member")]
fn members_refuse_an_empty_cluster() {
    let _ = Members::new(Vec::<NodeId>::new());
}

// ---------------------------------------------------------------------------
// Randomized agreement: 2-3 proposers, 3 acceptors, lossy network.
// ---------------------------------------------------------------------------

/// A deterministic simulation of the real core: acceptors run
/// `acceptor::handle` (or a deliberately broken variant), and a schedule of
/// choices decides which message is delivered, duplicated or lost and when
/// clients act. Agents that each run the production request
/// state machine (`Coordinator`, `src/paxos/coordinator.rs`, the very code
/// `src/node.rs` executes) against three real acceptors, over a network that
/// loses, duplicates and reorders. The simulation is the coordinator's
/// executor: it answers `NeedBallot` from a `BallotClock` with a durable
/// mark, `NeedPause` with no pause, and fires timers and closed calls when
/// the schedule says.
mod sim {
    use super::*;
    use paxos_kv::paxos::{Coordinator, Count, Effect, Limits, Outcome};

    pub type V = u32;
    pub type AcceptorFn = fn(&AcceptorState<V>, Request<V>) -> Step<V>;
    pub const ACCEPTORS: [NodeId; 3] = [1, 2, 3];
    const QUORUM: usize = 2;
    /// Classic rounds per request before it gives up (`Outcome::Unavailable`):
    /// keeps every run bounded while contending agents preempt each other.
    const MAX_ROUNDS: u32 = 4;

    #[derive(Clone, Debug)]
    enum Msg {
        /// `generation` names the agent's request, `call` its broadcast:
        /// replies to an earlier request are dropped (the node gives each
        /// request its own reply channel); replies to an earlier call of the
        /// same request reach the coordinator, which must ignore them.
        Request {
            to: NodeId,
            agent: usize,
            generation: u64,
            call: u32,
            request: Request<V>,
        },
        Reply {
            agent: usize,
            from: NodeId,
            generation: u64,
            call: u32,
            reply: Reply<V>,
        },
    }

    struct Agent {
        id: NodeId,
        value: V,
        clock: BallotClock,
        durable_mark: u64,
        generation: u64,
        /// The request under way, if any.
        coord: Option<Coordinator<V>>,
        /// Whether a value was chosen when the current read (or its
        /// recovery) began: then it must not report the register empty.
        chosen_at_start: bool,
        /// Whether the current request is a PUT (of `value`).
        putting: bool,
        learned: Option<(Ballot, V)>,
    }

    /// What one run saw, summed up over runs for the report.
    #[derive(Default, Debug, Clone, Copy)]
    pub struct Stats {
        pub chosen_reports: u64,
        pub created: u64,
        pub empty_reports: u64,
        pub preempted: u64,
        pub recoveries: u64,
        pub fast_writes: u64,
        pub fast_chosen: u64,
        pub unavailable: u64,
        pub truly_chosen: bool,
    }

    pub struct World {
        acceptor: AcceptorFn,
        fault: Fault,
        acceptors: Vec<AcceptorState<V>>,
        net: Vec<Msg>,
        agents: Vec<Agent>,
        /// Every vote ever cast (acknowledged with Accepted): ballot -> (value, voters).
        votes: BTreeMap<Ballot, (V, BTreeSet<NodeId>)>,
        /// Every vote in the fast ballot, which may carry several values:
        /// value -> voters. Chosen only with every acceptor's vote.
        fast_votes: BTreeMap<V, BTreeSet<NodeId>>,
        /// The value a majority accepted in one ballot, once that happened.
        truth: Option<V>,
        pub stats: Stats,
        pub trace: Vec<String>,
    }

    impl World {
        pub fn new(agents: usize, acceptor: AcceptorFn, fault: Fault) -> Self {
            World {
                acceptor,
                fault,
                acceptors: vec![AcceptorState::default(); ACCEPTORS.len()],
                net: Vec::new(),
                agents: (0..agents)
                    .map(|i| Agent {
                        id: i as NodeId + 1,
                        value: 100 + i as V,
                        clock: BallotClock::restore(i as NodeId + 1, 0),
                        durable_mark: 0,
                        generation: 0,
                        coord: None,
                        chosen_at_start: false,
                        putting: false,
                        learned: None,
                    })
                    .collect(),
                votes: BTreeMap::new(),
                fast_votes: BTreeMap::new(),
                truth: None,
                stats: Stats::default(),
                trace: Vec::new(),
            }
        }

        /// One scheduling choice.
        pub fn act(&mut self, op: u8, pick: u16) -> Result<(), String> {
            let n = self.agents.len();
            let pick = pick as usize;
            let agent = pick % n;
            let member = ACCEPTORS[(pick / n) % ACCEPTORS.len()];
            match op % 20 {
                0..=9 | 19 => self.deliver(pick, false),
                10 => self.deliver(pick, true),
                11 => {
                    if !self.net.is_empty() {
                        let m = self.net.remove(pick % self.net.len());
                        self.trace.push(format!("lose {m:?}"));
                    }
                    Ok(())
                }
                12 => self.start_put(agent, false),
                13 => self.start_put(agent, true),
                14 => self.start_get(agent),
                15 => self.with_coord(agent, |c| c.handle_unreachable(0, c.call(), member)),
                // The straggler wait expires (fast attempt falls back, read
                // gives up on the rest), or every call of the broadcast
                // returned and nothing more will come.
                16 if (pick / n) % 2 == 0 => self.with_coord(agent, |c| c.handle_timeout(0)),
                16 => self.with_coord(agent, |c| c.handle_closed(0, c.call())),
                17 => {
                    if let Some((ballot, value)) = self.agents[agent].learned {
                        self.net.push(Msg::Request {
                            to: member,
                            agent,
                            generation: 0,
                            call: 0,
                            request: Request::Decide { ballot, value },
                        });
                    }
                    Ok(())
                }
                _ => {
                    // The proposer process restarts: it forgets its request
                    // and what it learned, and restores its clock from the
                    // mark it persisted (inv. 2).
                    let a = &mut self.agents[agent];
                    a.clock = BallotClock::restore(a.id, a.durable_mark);
                    a.coord = None;
                    a.generation += 1;
                    a.learned = None;
                    self.trace.push(format!("restart agent {agent}"));
                    Ok(())
                }
            }
        }

        /// Delivers what is left in order, as a network that heals would.
        pub fn drain(&mut self, max_steps: usize) -> Result<(), String> {
            for _ in 0..max_steps {
                if self.net.is_empty() {
                    break;
                }
                self.deliver(0, false)?;
            }
            self.stats.truly_chosen = self.truth.is_some();
            Ok(())
        }

        fn limits(&self) -> Limits {
            Limits {
                max_rounds: Some(MAX_ROUNDS),
                fault: self.fault,
                ..Limits::unbounded()
            }
        }

        /// A new request replaces the agent's current one (if any).
        fn begin(
            &mut self,
            agent: usize,
            coord: Coordinator<V>,
            putting: bool,
        ) -> Result<(), String> {
            let chosen_at_start = self.truth.is_some();
            let a = &mut self.agents[agent];
            a.generation += 1;
            a.putting = putting;
            a.coord = Some(coord);
            a.chosen_at_start = chosen_at_start;
            self.pump(agent)
        }

        fn start_put(&mut self, agent: usize, fast: bool) -> Result<(), String> {
            let value = self.agents[agent].value;
            let coord = Coordinator::put(Members::new(ACCEPTORS), value, fast, self.limits());
            self.trace.push(format!(
                "agent {agent} puts {value}{}",
                if fast { " (fast first)" } else { "" }
            ));
            self.begin(agent, coord, true)
        }

        fn start_get(&mut self, agent: usize) -> Result<(), String> {
            let coord = Coordinator::get(Members::new(ACCEPTORS), self.limits());
            self.trace.push(format!("agent {agent} gets"));
            self.begin(agent, coord, false)
        }

        /// Feeds the agent's coordinator one event, then runs its effects.
        fn with_coord(
            &mut self,
            agent: usize,
            event: impl FnOnce(&mut Coordinator<V>),
        ) -> Result<(), String> {
            match &mut self.agents[agent].coord {
                Some(coord) => {
                    event(coord);
                    self.pump(agent)
                }
                None => Ok(()),
            }
        }

        /// Executes the coordinator's effects until it waits or is done.
        fn pump(&mut self, agent: usize) -> Result<(), String> {
            loop {
                let Some(coord) = self.agents[agent].coord.as_mut() else {
                    return Ok(());
                };
                match coord.poll() {
                    Effect::Send { call, request, .. } => self.broadcast(agent, call, request),
                    Effect::Announce { ballot, value } => {
                        self.check_chosen(agent, ballot, value)?;
                        for to in ACCEPTORS {
                            self.net.push(Msg::Request {
                                to,
                                agent,
                                generation: 0,
                                call: 0,
                                request: Request::Decide { ballot, value },
                            });
                        }
                    }
                    Effect::Count(count) => self.count(agent, count),
                    Effect::NeedBallot { above } => {
                        let a = &mut self.agents[agent];
                        let next = a.clock.next(above);
                        if let Some(mark) = next.reserve {
                            a.durable_mark = mark; // durable before the ballot is used
                        }
                        self.trace
                            .push(format!("agent {agent} takes ballot {}", next.ballot));
                        if let Some(coord) = a.coord.as_mut() {
                            coord.handle_ballot(next.ballot);
                        }
                    }
                    Effect::NeedPause { .. } => coord.handle_pause(0, 0),
                    Effect::Wait { .. } => return Ok(()),
                    Effect::Done(outcome) => {
                        self.agents[agent].coord = None;
                        return self.check_outcome(agent, outcome);
                    }
                }
            }
        }

        fn count(&mut self, agent: usize, count: Count) {
            match count {
                Count::FastRound => self.stats.fast_writes += 1,
                Count::Preempted => self.stats.preempted += 1,
                Count::Recovery => {
                    // The recovery's own start is what an Empty answers to.
                    self.stats.recoveries += 1;
                    self.agents[agent].chosen_at_start = self.truth.is_some();
                }
                Count::FastFallback | Count::Round => {}
            }
            self.trace.push(format!("agent {agent} counts {count:?}"));
        }

        fn broadcast(&mut self, agent: usize, call: u32, request: Request<V>) {
            let generation = self.agents[agent].generation;
            for to in ACCEPTORS {
                self.net.push(Msg::Request {
                    to,
                    agent,
                    generation,
                    call,
                    request: request.clone(),
                });
            }
        }

        fn deliver(&mut self, pick: usize, keep: bool) -> Result<(), String> {
            if self.net.is_empty() {
                return Ok(());
            }
            let i = pick % self.net.len();
            let msg = if keep {
                self.net[i].clone()
            } else {
                self.net.remove(i)
            };
            self.trace
                .push(format!("{} {msg:?}", if keep { "dup" } else { "deliver" }));
            match msg {
                Msg::Request {
                    to,
                    agent,
                    generation,
                    call,
                    request,
                } => {
                    let idx = (to - 1) as usize;
                    let step = (self.acceptor)(&self.acceptors[idx], request.clone());
                    let (new_state, reply) = run_step(step);
                    if let Some(s) = new_state {
                        self.acceptors[idx] = s; // durable before the reply exists
                    }
                    if let (Request::Accept { ballot, value }, Reply::Accepted { .. }) =
                        (&request, &reply)
                    {
                        self.record_vote(to, *ballot, *value)?;
                    }
                    if call != 0 {
                        self.net.push(Msg::Reply {
                            agent,
                            from: to,
                            generation,
                            call,
                            reply,
                        });
                    }
                    Ok(())
                }
                Msg::Reply {
                    agent,
                    from,
                    generation,
                    call,
                    reply,
                } => {
                    if generation != self.agents[agent].generation {
                        return Ok(());
                    }
                    self.with_coord(agent, |c| {
                        c.handle_reply(0, call, from, reply, FIRST_INCARNATION)
                    })
                }
            }
        }

        fn record_vote(&mut self, voter: NodeId, ballot: Ballot, value: V) -> Result<(), String> {
            if ballot == Ballot::FAST {
                let voters = self.fast_votes.entry(value).or_default();
                voters.insert(voter);
                if voters.len() == ACCEPTORS.len() {
                    return self.set_truth(value, ballot);
                }
                return Ok(());
            }
            let entry = self.votes.entry(ballot).or_insert((value, BTreeSet::new()));
            if entry.0 != value {
                return Err(format!(
                    "inv. 2 broken: ballot {ballot} carried values {} and {value}",
                    entry.0
                ));
            }
            entry.1.insert(voter);
            if entry.1.len() >= QUORUM {
                return self.set_truth(value, ballot);
            }
            Ok(())
        }

        fn set_truth(&mut self, value: V, ballot: Ballot) -> Result<(), String> {
            match self.truth {
                None => self.truth = Some(value),
                Some(t) if t != value => {
                    return Err(format!(
                        "AGREEMENT broken: {t} and {value} were both chosen (the latter in \
                         ballot {ballot}); votes {:?}, fast votes {:?}",
                        self.votes, self.fast_votes
                    ))
                }
                Some(_) => {}
            }
            Ok(())
        }

        /// A reported Chosen must be a value a majority really accepted in
        /// that very ballot (inv. 4), and the one value ever chosen.
        fn check_chosen(&mut self, agent: usize, ballot: Ballot, value: V) -> Result<(), String> {
            self.stats.chosen_reports += 1;
            let fast_voters = self.fast_votes.get(&value).map_or(0, |v| v.len());
            match self.votes.get(&ballot) {
                _ if ballot == Ballot::FAST && fast_voters == ACCEPTORS.len() => {}
                Some((v, voters))
                    if ballot != Ballot::FAST && *v == value && voters.len() >= QUORUM => {}
                other => {
                    return Err(format!(
                        "inv. 4 broken: agent {agent} reported {value} chosen in {ballot}, \
                         but that ballot's votes are {other:?}"
                    ))
                }
            }
            if self.truth != Some(value) {
                return Err(format!(
                    "AGREEMENT broken: agent {agent} reported {value}, truth is {:?}",
                    self.truth
                ));
            }
            if ballot == Ballot::FAST {
                self.stats.fast_chosen += 1;
            }
            self.agents[agent].learned = Some((ballot, value));
            self.trace
                .push(format!("agent {agent} learns {value} in {ballot}"));
            Ok(())
        }

        /// The request's answer: a Chosen is the value just announced (and
        /// checked); an Empty comes only from a GET that began (or began its
        /// recovery) before anything was chosen.
        fn check_outcome(&mut self, agent: usize, outcome: Outcome<V>) -> Result<(), String> {
            self.trace.push(format!("agent {agent} done: {outcome:?}"));
            match outcome {
                Outcome::Chosen { value, .. } => {
                    if self.agents[agent].learned.map(|(_, v)| v) != Some(value) {
                        return Err(format!(
                            "inv. 4 broken: agent {agent} answered {value} without announcing it"
                        ));
                    }
                    if self.agents[agent].putting && value == self.agents[agent].value {
                        self.stats.created += 1;
                    }
                    Ok(())
                }
                Outcome::Empty { .. } => {
                    self.stats.empty_reports += 1;
                    if self.agents[agent].putting {
                        return Err(format!("agent {agent}: a PUT ended Empty (inv. 4 broken)"));
                    }
                    if self.agents[agent].chosen_at_start {
                        return Err(format!(
                            "GET linearizability broken: agent {agent} found the register \
                             empty although {:?} was chosen before it asked",
                            self.truth
                        ));
                    }
                    Ok(())
                }
                Outcome::Unavailable => {
                    self.stats.unavailable += 1;
                    Ok(())
                }
            }
        }
    }

    /// Runs one schedule; `Err` describes the first broken property.
    pub fn run(
        agents: usize,
        schedule: &[(u8, u16)],
        acceptor: AcceptorFn,
        fault: Fault,
    ) -> Result<Stats, String> {
        let mut world = World::new(agents, acceptor, fault);
        let result = schedule
            .iter()
            .try_for_each(|&(op, pick)| world.act(op, pick))
            .and_then(|()| world.drain(5_000));
        match result {
            Ok(()) => Ok(world.stats),
            Err(e) => {
                let tail = world.trace.len().saturating_sub(40);
                Err(format!(
                    "{e}\nlast steps:\n  {}",
                    world.trace[tail..].join("\n  ")
                ))
            }
        }
    }
}

fn schedules() -> impl Strategy<Value = (usize, Vec<(u8, u16)>)> {
    (
        2usize..=3,
        prop::collection::vec((any::<u8>(), any::<u16>()), 1..400),
    )
}

/// An acceptor that loses its vote when it promises: a broken core the
/// agreement check must catch (proof that the check can fail).
fn forgetful_acceptor(state: &AcceptorState<sim::V>, request: Request<sim::V>) -> Step<sim::V> {
    match request {
        Request::Prepare { .. } => {
            let amnesiac = AcceptorState {
                accepted: None,
                ..state.clone()
            };
            acceptor::handle(&amnesiac, request)
        }
        _ => acceptor::handle(state, request),
    }
}

/// Guarantee 1 (agreement) and PMS's safety claim, on the real core and the
/// production request coordinator: random interleavings of 2-3 agents
/// running `Coordinator` PUTs (fast first or classic) and GETs with distinct
/// values against 3 acceptors, with message loss, duplication and
/// reordering, expired straggler waits, closed calls, unreachable members,
/// agent restarts, reads and recovery rounds, each request bounded to
/// `MAX_ROUNDS` classic rounds. Every Chosen that any request announces is a
/// value a majority accepted in that ballot (inv. 4), all are the same value,
/// a register found empty was not chosen before the read (or its recovery)
/// began, and no two values are ever accepted by a majority.
///
/// Replay: proptest prints the minimal failing schedule and records its seed
/// in `tests/core_rules.proptest-regressions` (replayed first on every run);
/// `PAXOS_KV_SEED=<n>` fixes the seed of a whole run (the printed replay
/// command sets it), `PROPTEST_CASES` raises the number of schedules.
#[test]
fn agreement_under_random_interleavings() {
    let cfg = seeded_config("agreement_under_random_interleavings", 3000);
    let totals: [AtomicU64; 9] = Default::default();
    let mut runner = TestRunner::new(cfg);
    let result = runner.run(&schedules(), |(agents, schedule)| {
        let stats = sim::run(agents, &schedule, acceptor::handle, Fault::None)
            .map_err(TestCaseError::fail)?;
        for (total, n) in totals.iter().zip([
            1,
            stats.chosen_reports,
            stats.created,
            stats.empty_reports,
            stats.preempted,
            stats.recoveries,
            stats.fast_writes,
            stats.fast_chosen,
            stats.unavailable,
        ]) {
            total.fetch_add(n, Ordering::Relaxed);
        }
        Ok(())
    });
    fail_on(result);
    let [runs, chosen, created, empty, preempted, recoveries, fast, fast_chosen, unavailable] =
        totals.map(|t| t.load(Ordering::Relaxed));
    eprintln!(
        "agreement: {runs} schedules, {chosen} Chosen reports ({created} by proposing), \
         {empty} Empty, {preempted} Preempted, {recoveries} recovery rounds, \
         {fast} fast-ballot writes ({fast_chosen} Chosen reports in the fast ballot), \
         {unavailable} Unavailable (out of rounds)"
    );
    assert!(
        fast > 0 && fast_chosen > 0,
        "the fast ballot was not exercised"
    );
    // The check must exercise the interesting paths, or it proves nothing.
    assert!(
        chosen > runs,
        "too few Chosen outcomes: {chosen} in {runs} runs"
    );
    assert!(preempted > 0 && recoveries > 0 && empty > 0 && created > 0);
}

/// The agreement check is not vacuous: with an acceptor that forgets its
/// vote when it promises (breaking PMS P2c), the same simulation finds a
/// violation within a fixed, deterministic set of schedules.
#[test]
fn agreement_check_catches_a_forgetful_acceptor() {
    assert_agreement_check_catches(forgetful_acceptor, Fault::None, "a forgetful acceptor");
}

/// The agreement check drives the production coordinator: with its
/// `Fault::FastMajority` (a fast attempt whose straggler wait ends with a
/// majority of fast accepts declares its value chosen), the same simulation
/// finds a violation.
#[test]
fn agreement_check_catches_a_fast_majority_coordinator() {
    assert_agreement_check_catches(
        acceptor::handle,
        Fault::FastMajority,
        "a coordinator that takes a majority of fast accepts for chosen",
    );
}

/// Runs the agreement simulation over a fixed, deterministic set of
/// schedules with `acceptor` in place of the real one and the coordinator
/// built with `fault`, and asserts that it reports a broken guarantee.
fn assert_agreement_check_catches(acceptor: sim::AcceptorFn, fault: Fault, what: &str) {
    let mut cfg = Config::with_cases(2000);
    cfg.failure_persistence = None;
    cfg.max_shrink_iters = 0;
    let mut runner =
        TestRunner::new_with_rng(cfg, TestRng::deterministic_rng(RngAlgorithm::ChaCha));
    let result = runner.run(&schedules(), |(agents, schedule)| {
        sim::run(agents, &schedule, acceptor, fault).map_err(TestCaseError::fail)?;
        Ok(())
    });
    match result {
        Err(TestError::Fail(reason, _)) => {
            assert!(
                reason.to_string().contains("broken"),
                "unexpected failure: {reason}"
            );
        }
        other => panic!("{what} went unnoticed: {other:?}"),
    }
}

/// Breaks the fast-ballot rule: votes again in the fast ballot for another
/// value (a second fast vote), as if the fast ballot were an ordinary one.
fn fast_revoting_acceptor(state: &AcceptorState<sim::V>, request: Request<sim::V>) -> Step<sim::V> {
    match &request {
        Request::Accept { ballot, .. }
            if *ballot == Ballot::FAST && state.promised == Ballot::FAST && !state.decided =>
        {
            let unvoted = AcceptorState {
                accepted: None,
                ..state.clone()
            };
            acceptor::handle(&unvoted, request)
        }
        _ => acceptor::handle(state, request),
    }
}

/// The agreement check sees the fast ballot's own rule: with an acceptor
/// that casts a second fast vote for another value, two values get chosen.
#[test]
fn agreement_check_catches_a_second_fast_vote() {
    assert_agreement_check_catches(fast_revoting_acceptor, Fault::None, "a second fast vote");
}

/// The fast round (`Round::start_fast`), one row each: chosen only with
/// every member's vote; any refusal or unreachable member ends it.
#[test]
fn fast_round_table() {
    use Progress::{Preempted, Stalled, Wait};
    let fast_chosen = |value| Progress::Chosen {
        ballot: Ballot::FAST,
        value,
        proposed: true,
    };
    type Row = (&'static str, Vec<NodeId>, Vec<Ev>, Vec<Progress<Val>>);
    let rows: Vec<Row> = vec![
        (
            "Fast Paxos: chosen only when every member accepted",
            vec![1, 2, 3],
            vec![
                accepted(1, Ballot::FAST),
                accepted(2, Ballot::FAST),
                accepted(3, Ballot::FAST),
            ],
            vec![Wait, Wait, fast_chosen("mine")],
        ),
        (
            "Fast Paxos: a majority of fast accepts is not enough; an unreachable member ends the round",
            vec![1, 2, 3],
            vec![accepted(1, Ballot::FAST), accepted(2, Ballot::FAST), Ev::Down(3)],
            vec![Wait, Wait, Stalled],
        ),
        (
            "Fast Paxos: a refusal for another fast value ends the round (Stalled: no higher promise)",
            vec![1, 2, 3],
            vec![rejected(2, Ballot::FAST, Ballot::FAST)],
            vec![Stalled],
        ),
        (
            "Fast Paxos: a refusal for a promise ends the round, Preempted above it",
            vec![1, 2, 3],
            vec![accepted(1, Ballot::FAST), rejected(3, Ballot::FAST, b(4, 2))],
            vec![Wait, Preempted { seen: b(4, 2) }],
        ),
        (
            "inv. 5: a Decided reply ends the fast round with the decided value",
            vec![1, 2, 3],
            vec![Ev::R(2, Reply::Decided { ballot: b(2, 2), value: "d" })],
            vec![Progress::Chosen { ballot: b(2, 2), value: "d", proposed: false }],
        ),
        (
            "a one-member cluster: its single vote is every vote",
            vec![1],
            vec![accepted(1, Ballot::FAST)],
            vec![fast_chosen("mine")],
        ),
    ];
    let mut failures = Vec::new();
    for (claim, members, events, expect) in rows {
        let (mut round, accept) = Round::start_fast(Members::new(members), "mine");
        assert_eq!(
            accept,
            Request::Accept {
                ballot: Ballot::FAST,
                value: "mine"
            },
            "{claim}"
        );
        let got: Vec<Progress<Val>> = events
            .iter()
            .map(|ev| match ev.clone() {
                Ev::R(from, reply) => round.on_reply(from, reply),
                Ev::Down(from) => round.on_unreachable(from),
            })
            .collect();
        if got != expect {
            failures.push(format!("{claim}\n    want {expect:?}\n    got  {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------
// A lost disk: the incarnation fence and the rebuilt vote (inv. 8,
// `src/paxos/rejoin.rs`).
// ---------------------------------------------------------------------------

fn known(entries: &[(NodeId, Incarnation)]) -> Known {
    Known(entries.iter().copied().collect())
}

fn fence(entries: &[(NodeId, Incarnation)]) -> Fence {
    let mut fence = Fence::default();
    for (node, incarnation) in entries {
        fence.promised(*node, *incarnation);
    }
    fence
}

/// Inv. 8: an accept is refused exactly when its round relied on a promise
/// of an incarnation older than one recorded; the refusal names it.
#[test]
fn fence_rules_table() {
    #[allow(clippy::type_complexity)]
    let cases: Vec<(
        &str,
        &[(NodeId, Incarnation)],
        &[(NodeId, Incarnation)],
        Result<(), NodeId>,
    )> = vec![
        (
            "nothing recorded, first incarnations promised",
            &[],
            &[(1, 1), (2, 1)],
            Ok(()),
        ),
        ("fast accepts carry no fence", &[(2, 5)], &[], Ok(())),
        (
            "a promiser that lost its disk since",
            &[(2, 2)],
            &[(1, 1), (2, 1)],
            Err(2),
        ),
        (
            "the promiser's new incarnation promised",
            &[(2, 2)],
            &[(1, 1), (2, 2)],
            Ok(()),
        ),
        (
            "a newer incarnation than recorded promised",
            &[(2, 2)],
            &[(2, 3)],
            Ok(()),
        ),
        (
            "a non-promiser's incarnation is irrelevant",
            &[(3, 9)],
            &[(1, 1), (2, 1)],
            Ok(()),
        ),
        (
            "two superseded: the lowest id is named",
            &[(2, 2), (3, 2)],
            &[(3, 1), (2, 1)],
            Err(2),
        ),
        (
            "unrecorded means the first incarnation",
            &[],
            &[(4, FIRST_INCARNATION)],
            Ok(()),
        ),
    ];
    for (name, recorded, promisers, expected) in cases {
        assert_eq!(
            known(recorded).admits(&fence(promisers)),
            expected,
            "{name}"
        );
    }
    let mut table = Known::default();
    assert_eq!(table.of(7), FIRST_INCARNATION);
    assert!(table.record(7, 3), "raising changes the table");
    assert!(!table.record(7, 2), "a lower incarnation is ignored");
    assert!(!table.record(7, 3), "the same incarnation changes nothing");
    assert_eq!(table.of(7), 3);
    assert!(Fence::default().is_empty() && !fence(&[(1, 1)]).is_empty());
}

fn incarnation_maps() -> impl Strategy<Value = BTreeMap<NodeId, Incarnation>> {
    proptest::collection::btree_map(1u32..=5, 1u64..=4, 0..=5)
}

/// Inv. 8, for any table and fence: `admits` refuses iff some promiser's
/// incarnation is below the recorded one, naming the lowest such id; and
/// recording only ever turns admitted fences into refused ones (the table
/// only grows, so a refusal is final).
#[test]
fn fence_admits_iff_no_promiser_is_superseded() {
    let cfg = seeded_config("fence_admits_iff_no_promiser_is_superseded", 2000);
    let mut runner = TestRunner::new(cfg);
    let strategy = (incarnation_maps(), incarnation_maps(), (1u32..=5, 1u64..=4));
    let result = runner.run(&strategy, |(recorded, promisers, (node, raise))| {
        let mut table = Known(recorded.clone());
        let fence = Fence(promisers.clone());
        let superseded = promisers
            .iter()
            .find(|(n, inc)| **inc < recorded.get(n).copied().unwrap_or(FIRST_INCARNATION))
            .map(|(n, _)| *n);
        prop_assert_eq!(table.admits(&fence), superseded.map_or(Ok(()), Err));
        let before = table.admits(&fence);
        let changed = table.record(node, raise);
        prop_assert_eq!(
            changed,
            raise > recorded.get(&node).copied().unwrap_or(FIRST_INCARNATION)
        );
        if before.is_err() {
            prop_assert!(table.admits(&fence).is_err(), "a refusal is final");
        }
        Ok(())
    });
    fail_on(result);
}

/// The rebuild rule's rows: the highest classic vote wins over fast votes
/// and lower ones; a fast vote is kept only when every promiser has it.
#[test]
fn rebuilt_vote_table() {
    let fast = |v| Some(vote(Ballot::FAST, v));
    let classic = |r, n, v| Some(vote(b(r, n), v));
    #[allow(clippy::type_complexity)]
    let cases: Vec<(&str, Vec<Option<Accepted<Val>>>, Option<Accepted<Val>>)> = vec![
        ("no votes", vec![None, None], None),
        (
            "one classic vote among blanks",
            vec![None, classic(2, 1, "a")],
            classic(2, 1, "a"),
        ),
        (
            "highest classic vote",
            vec![classic(1, 3, "a"), classic(2, 1, "b")],
            classic(2, 1, "b"),
        ),
        (
            "classic over fast",
            vec![fast("x"), classic(1, 1, "a"), fast("x")],
            classic(1, 1, "a"),
        ),
        (
            "unanimous fast vote",
            vec![fast("x"), fast("x"), fast("x")],
            fast("x"),
        ),
        ("split fast votes", vec![fast("x"), fast("y")], None),
        ("a fast vote and a blank", vec![fast("x"), None], None),
        ("a single promiser's fast vote", vec![fast("x")], fast("x")),
    ];
    for (name, promises, expected) in cases {
        let members = Members::new(1..=5);
        let promises: BTreeMap<NodeId, _> = (1..).zip(promises).collect();
        assert_eq!(rebuilt_vote(&promises, &members), expected, "{name}");
    }
}

/// Inv. 8, the reason for the rebuild: whatever value is chosen (a
/// majority voted for it in a classic ballot `c`, later votes at or above
/// `c` all for it by P2c; or every member voted for it in the fast ballot),
/// and whichever member lost its disk, the vote rebuilt from the promises
/// of ANY majority of the other members carries that value.
#[test]
fn rebuilt_vote_keeps_a_chosen_value() {
    let cfg = seeded_config("rebuilt_vote_keeps_a_chosen_value", 3000);
    let mut runner = TestRunner::new(cfg);
    // Per member: 0 = no vote, 1 = a lower vote for another value, 2 = a
    // vote for the chosen value at or above its ballot.
    let strategy = (
        prop_oneof![Just(3usize), Just(5usize)],
        any::<bool>(),
        proptest::collection::vec((0u8..3, 0u64..3, any::<bool>()), 5),
        any::<u64>(),
    );
    let result = runner.run(&strategy, |(n, fast, members, pick)| {
        let quorum = n / 2 + 1;
        let chosen_round = 3u64;
        let mut votes: Vec<Option<Accepted<Val>>> = Vec::new();
        for (i, (kind, extra, other_value)) in members.iter().take(n).enumerate() {
            let node = i as NodeId + 1;
            let vote_of = if fast {
                // Every member voted in the fast ballot; some later also in
                // a classic ballot (for the same value, P2c).
                if *kind == 2 {
                    Some(vote(b(1 + extra, node), "v"))
                } else {
                    Some(vote(Ballot::FAST, "v"))
                }
            } else {
                // The first `quorum` members chose "v" in round 3.
                match (i < quorum, kind) {
                    (true, 0 | 1) => Some(vote(b(chosen_round, 1), "v")),
                    (true, _) | (false, 2) => Some(vote(b(chosen_round + extra, 1), "v")),
                    (false, 1) => {
                        let value = if *other_value { "w" } else { "v" };
                        Some(vote(b(1 + extra.min(&1), node), value))
                    }
                    (false, _) => None,
                }
            };
            votes.push(vote_of);
        }
        let wiped = (pick % n as u64) as usize;
        let others: Vec<usize> = (0..n).filter(|i| *i != wiped).collect();
        // Any majority of the others: drop (others - quorum) of them.
        let mut majority = others.clone();
        let mut r = pick / n as u64;
        while majority.len() > quorum {
            let drop = (r % majority.len() as u64) as usize;
            majority.remove(drop);
            r /= 3;
        }
        let promises: BTreeMap<NodeId, Option<Accepted<Val>>> = majority
            .iter()
            .map(|i| (*i as NodeId + 1, votes[*i].clone()))
            .collect();
        let rebuilt = rebuilt_vote(&promises, &Members::new(1..=n as NodeId));
        prop_assert_eq!(
            rebuilt.map(|a| a.value),
            Some("v"),
            "votes {:?}, wiped {}, majority {:?}",
            votes,
            wiped,
            majority
        );
        Ok(())
    });
    fail_on(result);
}
