//! An exact linearizability checker for histories of write-once registers
//! (docs/api.md guarantee 4), without search.
//!
//! # The model
//!
//! Each key is a register that starts empty and can be written once. A
//! history is a list of [`Op`]s, each with the key, what the client asked
//! ([`Call`]), what it got back ([`Ret`]), and when it was invoked and when the
//! answer arrived. Times are any totally ordered type: an operation `a`
//! *precedes* `b` in real time when `a.completed < b.invoked` (strictly:
//! equal times count as concurrent, so coarse clocks stay sound; a counter
//! bumped at every recorded event gives the sharpest check).
//!
//! The sequential specification, per register, with state `None` or `Some(x)`:
//! - `PUT v -> Created`: the state was `None`; it becomes `Some(v)`.
//! - `PUT v -> AlreadyChosen`: the state was `Some(v)`.
//! - `PUT v -> Conflict(c)`: the state was `Some(c)` with `c != v`.
//! - `GET -> Found(x)`: the state is `Some(x)`; `GET -> NotFound`: it is `None`.
//! - `Unknown` (503, timeout, coordinator crashed, client gave up): the
//!   operation may or may not have taken effect, at any time after its
//!   invocation. It is either left out of the linearization or placed
//!   anywhere after its invocation (its completion counts as infinity).
//!   Only an unknown PUT can matter: as the write that filled the register.
//!
//! The history is linearizable iff there is a total order of all definite
//! operations plus some of the unknown ones that respects real-time precedence
//! and in which every operation returns what the specification says.
//!
//! # The rules (checked per key)
//!
//! Call an operation an *observer of x* when it is definite and its answer
//! shows the register holding `x`: `Found(x)`, `Conflict(x)`, and
//! `AlreadyChosen` / `Created` of a PUT of `x`. Call a definite `NotFound` GET
//! an *empty read*.
//!
//! 1. Well-formed: a PUT gets a PUT answer, a GET a GET answer; a definite
//!    answer has a completion time not before its invocation; a PUT of `v`
//!    never gets `Conflict(v)` (no state allows it).
//! 2. One value: all observers observe the same value `v`.
//! 3. One creation: at most one PUT is `Created`.
//! 4. A writer: if some value `v` is observed, the writer `W` is the `Created`
//!    PUT if there is one; otherwise it must be an `Unknown` PUT of `v` (the
//!    value came from some client), and we take the one invoked first.
//! 5. Real time: with `L` = the latest invocation among `W` and all empty
//!    reads, and `R` = the earliest completion among `W` (infinity if unknown)
//!    and all other observers, `L <= R`.
//!
//! If no value is observed, rules 1 to 3 suffice: every definite operation is
//! an empty read (a `Created` or `AlreadyChosen` PUT would observe its value),
//! and the empty reads in invocation order are a linearization.
//!
//! # Why the rules are exact
//!
//! *Sufficient.* Suppose they hold, with writer `W`. Give each operation a
//! point in time: an empty read its invocation, `W` the time `L`, an observer
//! `max(invoked, L)`; leave every other unknown operation out. Every point
//! lies in its operation's interval: empty reads trivially, `W` because
//! `inv(W) <= L <= R <= end(W)`, an observer because `L <= R <= end(O)`.
//! Order by point, breaking ties as empty reads, then `W`, then observers.
//! If `a` precedes `b` in real time, `point(a) <= end(a) < inv(b) <= point(b)`,
//! so the order respects real time. In it every empty read comes before `W`
//! (point `<= L`, tie broken before `W`) and sees `None`; `W` sees `None` and
//! writes `v`; every observer comes after `W` and sees `Some(v)`, which is
//! what it observed (rule 2); no other operation writes (rule 3, and unknown
//! PUTs other than `W` are left out). So the order is a linearization.
//!
//! *Necessary.* Rule 1 is the specification itself. In any linearization
//! the state is `None` until one write and `Some(v)` forever after, so
//! every observer sees the same `v` (rule 2) and only one PUT finds the
//! register empty (rule 3). The write is a `Created` PUT, or, with none, an
//! unknown PUT of `v`: `AlreadyChosen`, `Conflict` and GETs do not write
//! (rule 4). Empty reads are ordered before the write, observers after it.
//! If `L > R`, one of these holds and each contradicts the order: an empty
//! read invoked after `W` completed (it must follow `W`); an empty read
//! invoked after an observer completed (it must follow the observer, which
//! follows `W`); `W` invoked after an observer completed (the observer must
//! precede `W`). Choosing the earliest-invoked unknown PUT of `v` as the
//! writer minimizes `L` and leaves `R` at the other observers' minimum, so if
//! it fails every candidate fails.
//!
//! [`check`] returns a witness [`Linearization`] or the first broken rule as a
//! [`Violation`]; [`replay`] validates any proposed linearization directly
//! against the specification (the unit tests use it, together with a
//! brute-force search, to test the rules above).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt::{self, Debug, Write as _};

/// What a client asked of a register.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call<V> {
    /// Write `V` once.
    Put(V),
    /// Read.
    Get,
}

/// What the client got back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ret<V> {
    /// PUT: the register was empty; this PUT's value is now chosen (201).
    Created,
    /// PUT: the register already held this PUT's value (200).
    AlreadyChosen,
    /// PUT: the register holds this other value (409).
    Conflict(V),
    /// GET: the register holds this value (200).
    Found(V),
    /// GET: the register is empty (404).
    NotFound,
    /// Any failure (503, timeout, crash): may or may not have taken effect.
    Unknown,
}

/// One operation of a history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Op<V, T> {
    /// The register.
    pub key: String,
    /// Who issued it (for display only).
    pub process: usize,
    /// The request.
    pub call: Call<V>,
    /// The answer.
    pub ret: Ret<V>,
    /// When the request was sent.
    pub invoked: T,
    /// When the answer arrived; `None` if it never did. Ignored for
    /// [`Ret::Unknown`], whose completion counts as infinity.
    pub completed: Option<T>,
}

impl<V, T> Op<V, T> {
    fn is_definite(&self) -> bool {
        !matches!(self.ret, Ret::Unknown)
    }
}

/// A completion time where an unknown outcome counts as infinitely late.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum End<T> {
    At(T),
    Never,
}

fn end<V: PartialEq, T: Copy>(op: &Op<V, T>) -> End<T> {
    match (&op.ret, op.completed) {
        (Ret::Unknown, _) | (_, None) => End::Never,
        (_, Some(t)) => End::At(t),
    }
}

/// A total order of (some of) the operations of one register that the
/// specification accepts, as indices into the checked history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Linearization<V> {
    /// Operation indices in linearization order; unknown operations that are
    /// left out do not appear.
    pub order: Vec<usize>,
    /// The write that filled the register and its value, if any was observed.
    pub write: Option<(usize, V)>,
}

/// Why a history is not linearizable (indices into the checked history).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Violation<V> {
    /// Rule 1: an answer no state allows, or a definite answer without a
    /// proper completion time.
    Malformed {
        /// The operation.
        op: usize,
        /// What is wrong with it.
        why: &'static str,
    },
    /// Rule 2: two operations observed different values.
    TwoValues {
        /// The first observer of `first_value`.
        first: usize,
        /// What it observed.
        first_value: V,
        /// An observer of something else.
        second: usize,
        /// What that one observed.
        second_value: V,
    },
    /// Rule 3: two PUTs were both told they created the value.
    TwoCreated {
        /// One `Created` PUT.
        first: usize,
        /// Another.
        second: usize,
    },
    /// Rule 4: a value was observed that no PUT could have written.
    NoWriter {
        /// The observed value.
        value: V,
        /// An operation that observed it.
        observer: usize,
    },
    /// Rule 5: `later` was invoked after `earlier` completed, yet the
    /// specification needs `later` linearized before `earlier`.
    RealTime {
        /// The operation that completed first.
        earlier: usize,
        /// The operation invoked after it.
        later: usize,
        /// Which order the specification needed.
        why: &'static str,
    },
}

impl<V: Debug> fmt::Display for Violation<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::Malformed { op, why } => write!(f, "op #{op} is malformed: {why}"),
            Violation::TwoValues {
                first,
                first_value,
                second,
                second_value,
            } => write!(
                f,
                "two values chosen: op #{first} observed {first_value:?}, \
                 op #{second} observed {second_value:?}"
            ),
            Violation::TwoCreated { first, second } => {
                write!(
                    f,
                    "two PUTs were told 'created': op #{first} and op #{second}"
                )
            }
            Violation::NoWriter { value, observer } => write!(
                f,
                "op #{observer} observed {value:?}, which no created or unknown PUT wrote"
            ),
            Violation::RealTime {
                earlier,
                later,
                why,
            } => write!(
                f,
                "real-time order broken: op #{later} was invoked after op #{earlier} \
                 completed, but {why}"
            ),
        }
    }
}

/// Checks one register: all of `ops` must have the same key (not checked).
/// Returns a linearization, or the first rule of the module docs it breaks.
pub fn check<V, T>(ops: &[Op<V, T>]) -> Result<Linearization<V>, Violation<V>>
where
    V: Clone + Eq + Debug,
    T: Ord + Copy + Debug,
{
    let all: Vec<usize> = (0..ops.len()).collect();
    check_subset(ops, &all)
}

/// Checks every key of a history separately (registers are independent).
/// Indices in the answers are indices into `ops`.
pub fn check_per_key<V, T>(
    ops: &[Op<V, T>],
) -> Result<BTreeMap<String, Linearization<V>>, (String, Violation<V>)>
where
    V: Clone + Eq + Debug,
    T: Ord + Copy + Debug,
{
    let mut by_key: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, op) in ops.iter().enumerate() {
        by_key.entry(&op.key).or_default().push(i);
    }
    let mut out = BTreeMap::new();
    for (key, indices) in by_key {
        let lin = check_subset(ops, &indices).map_err(|v| (key.to_owned(), v))?;
        out.insert(key.to_owned(), lin);
    }
    Ok(out)
}

/// The value an operation observed, if it is an observer.
fn observed<V: Clone, T>(op: &Op<V, T>) -> Option<V> {
    match (&op.call, &op.ret) {
        (Call::Put(v), Ret::Created | Ret::AlreadyChosen) => Some(v.clone()),
        (Call::Put(_), Ret::Conflict(c)) => Some(c.clone()),
        (Call::Get, Ret::Found(x)) => Some(x.clone()),
        _ => None,
    }
}

fn check_subset<V, T>(ops: &[Op<V, T>], indices: &[usize]) -> Result<Linearization<V>, Violation<V>>
where
    V: Clone + Eq + Debug,
    T: Ord + Copy + Debug,
{
    // Rule 1.
    for &i in indices {
        let op = &ops[i];
        let why = match (&op.call, &op.ret) {
            (Call::Put(_), Ret::Found(_) | Ret::NotFound) => Some("a PUT got a GET answer"),
            (Call::Get, Ret::Created | Ret::AlreadyChosen | Ret::Conflict(_)) => {
                Some("a GET got a PUT answer")
            }
            (Call::Put(v), Ret::Conflict(c)) if v == c => {
                Some("a PUT was told its own value conflicts")
            }
            _ => None,
        };
        let why = why.or(match (op.is_definite(), op.completed) {
            (true, None) => Some("a definite answer without a completion time"),
            (true, Some(t)) if t < op.invoked => Some("completed before it was invoked"),
            _ => None,
        });
        if let Some(why) = why {
            return Err(Violation::Malformed { op: i, why });
        }
    }
    // Rule 2.
    let mut chosen: Option<(usize, V)> = None;
    for &i in indices {
        let Some(x) = observed(&ops[i]) else { continue };
        match &chosen {
            None => chosen = Some((i, x)),
            Some((first, v)) if *v != x => {
                return Err(Violation::TwoValues {
                    first: *first,
                    first_value: v.clone(),
                    second: i,
                    second_value: x,
                })
            }
            Some(_) => {}
        }
    }
    // Rule 3.
    let created: Vec<usize> = indices
        .iter()
        .copied()
        .filter(|&i| ops[i].ret == Ret::Created)
        .collect();
    if let [first, second, ..] = created[..] {
        return Err(Violation::TwoCreated { first, second });
    }
    let mut empty_reads: Vec<usize> = indices
        .iter()
        .copied()
        .filter(|&i| ops[i].call == Call::Get && ops[i].ret == Ret::NotFound)
        .collect();
    empty_reads.sort_by_key(|&i| (ops[i].invoked, i));
    let Some((first_observer, value)) = chosen else {
        return Ok(Linearization {
            order: empty_reads,
            write: None,
        });
    };
    // Rule 4.
    let writer = match created.first() {
        Some(&w) => w,
        None => indices
            .iter()
            .copied()
            .filter(|&i| ops[i].ret == Ret::Unknown && ops[i].call == Call::Put(value.clone()))
            .min_by_key(|&i| (ops[i].invoked, i))
            .ok_or(Violation::NoWriter {
                value: value.clone(),
                observer: first_observer,
            })?,
    };
    let observers: Vec<usize> = indices
        .iter()
        .copied()
        .filter(|&i| i != writer && observed(&ops[i]).is_some())
        .collect();
    // Rule 5. `l` is the latest invocation that must precede the write point,
    // `r` the earliest completion that must follow it.
    let (l_op, l) = empty_reads
        .iter()
        .map(|&g| (g, ops[g].invoked))
        .chain([(writer, ops[writer].invoked)])
        .max_by_key(|&(i, t)| (t, i == writer))
        .expect("the writer is there");
    let (r_op, r) = observers
        .iter()
        .map(|&o| (o, end(&ops[o])))
        .chain([(writer, end(&ops[writer]))])
        .min_by_key(|&(i, t)| (t, i != writer))
        .expect("the writer is there");
    if End::At(l) > r {
        let why = if l_op == writer {
            "it observed the value before the only possible writer was invoked"
        } else if r_op == writer {
            "it read an empty register after the write that filled it had completed"
        } else {
            "it read an empty register after another operation had observed the value"
        };
        let (earlier, later) = (r_op, l_op);
        return Err(Violation::RealTime {
            earlier,
            later,
            why,
        });
    }
    // The witness of the sufficiency argument.
    let mut points: Vec<(T, u8, usize)> = empty_reads
        .iter()
        .map(|&g| (ops[g].invoked, 0, g))
        .collect();
    points.push((l, 1, writer));
    points.extend(observers.iter().map(|&o| (ops[o].invoked.max(l), 2, o)));
    points.sort();
    Ok(Linearization {
        order: points.into_iter().map(|(_, _, i)| i).collect(),
        write: Some((writer, value)),
    })
}

/// Validates a proposed linearization of one register against the
/// specification, independently of the rules: `order` must contain every
/// definite operation once (unknown ones at most once), respect real-time
/// precedence, and make every operation return what it returned.
pub fn replay<V, T>(ops: &[Op<V, T>], order: &[usize]) -> Result<(), String>
where
    V: Clone + Eq + Debug,
    T: Ord + Copy + Debug,
{
    let mut seen = vec![false; ops.len()];
    for &i in order {
        if i >= ops.len() || std::mem::replace(&mut seen[i], true) {
            return Err(format!("op #{i} is out of range or appears twice"));
        }
    }
    if let Some(i) = (0..ops.len()).find(|&i| ops[i].is_definite() && !seen[i]) {
        return Err(format!("definite op #{i} is missing"));
    }
    for (pos, &a) in order.iter().enumerate() {
        for &b in &order[pos + 1..] {
            // b is linearized after a, so b must not precede a in real time.
            if end(&ops[b]) < End::At(ops[a].invoked) {
                return Err(format!("op #{b} completed before op #{a} was invoked"));
            }
        }
    }
    let mut state: Option<V> = None;
    for &i in order {
        let op = &ops[i];
        let ok = match (&op.call, &op.ret) {
            (_, Ret::Unknown) => {
                if let (Call::Put(v), None) = (&op.call, &state) {
                    state = Some(v.clone());
                }
                true
            }
            (Call::Put(v), Ret::Created) if state.is_none() => {
                state = Some(v.clone());
                true
            }
            (Call::Put(v), Ret::AlreadyChosen) => state.as_ref() == Some(v),
            (Call::Put(v), Ret::Conflict(c)) => state.as_ref() == Some(c) && c != v,
            (Call::Get, Ret::Found(x)) => state.as_ref() == Some(x),
            (Call::Get, Ret::NotFound) => state.is_none(),
            _ => false,
        };
        if !ok {
            return Err(format!("op #{i} answered {:?} in state {state:?}", op.ret));
        }
    }
    Ok(())
}

/// The history as text, one operation per line, for failure messages.
pub fn render<V: Debug, T: Debug>(ops: &[Op<V, T>]) -> String {
    render_where(ops, |_| true)
}

/// The operations of `ops` that `keep` selects, with their indices in `ops`.
pub fn render_where<V: Debug, T: Debug>(
    ops: &[Op<V, T>],
    keep: impl Fn(&Op<V, T>) -> bool,
) -> String {
    let mut out = String::new();
    for (i, op) in ops.iter().enumerate().filter(|(_, op)| keep(op)) {
        let call = match &op.call {
            Call::Put(v) => format!("PUT {v:?}"),
            Call::Get => "GET".to_owned(),
        };
        let done = match &op.completed {
            Some(t) => format!("{t:?}"),
            None => "never".to_owned(),
        };
        let _ = writeln!(
            out,
            "#{i:<4} p{:<3} {:?} .. {done:<16} key={:<6} {call} -> {:?}",
            op.process, op.invoked, op.key, op.ret
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    type H = Vec<Op<&'static str, u32>>;

    fn op(
        call: Call<&'static str>,
        ret: Ret<&'static str>,
        inv: u32,
        done: u32,
    ) -> Op<&'static str, u32> {
        Op {
            key: "k".into(),
            process: 0,
            call,
            ret,
            invoked: inv,
            completed: Some(done),
        }
    }
    fn put(v: &'static str, ret: Ret<&'static str>, inv: u32, done: u32) -> Op<&'static str, u32> {
        op(Call::Put(v), ret, inv, done)
    }
    fn get(ret: Ret<&'static str>, inv: u32, done: u32) -> Op<&'static str, u32> {
        op(Call::Get, ret, inv, done)
    }

    fn assert_ok(h: &H) {
        let lin = check(h).unwrap_or_else(|v| panic!("{v}\n{}", render(h)));
        replay(h, &lin.order).unwrap_or_else(|e| panic!("bad witness: {e}\n{}", render(h)));
    }

    #[test]
    fn empty_and_read_only_histories_are_fine() {
        assert_ok(&vec![]);
        assert_ok(&vec![get(Ret::NotFound, 0, 1), get(Ret::NotFound, 2, 3)]);
        assert_ok(&vec![
            put("a", Ret::Unknown, 0, 1),
            get(Ret::NotFound, 2, 3),
        ]);
    }

    #[test]
    fn a_plain_write_then_reads_is_fine() {
        assert_ok(&vec![
            get(Ret::NotFound, 0, 1),
            put("a", Ret::Created, 2, 5),
            put("b", Ret::Conflict("a"), 3, 6),
            get(Ret::Found("a"), 4, 7),
            put("a", Ret::AlreadyChosen, 8, 9),
            get(Ret::Found("a"), 10, 11),
        ]);
    }

    #[test]
    fn concurrent_reads_may_see_either_side_of_the_write() {
        // Both reads overlap the write: one before, one after is fine, and
        // the empty read may even complete after the found one (both overlap).
        assert_ok(&vec![
            put("a", Ret::Created, 0, 10),
            get(Ret::Found("a"), 1, 3),
            get(Ret::NotFound, 2, 9),
        ]);
        // Equal times are concurrent.
        assert_ok(&vec![
            get(Ret::Found("a"), 0, 5),
            get(Ret::NotFound, 5, 6),
            put("a", Ret::Unknown, 0, 1),
        ]);
    }

    #[test]
    fn an_unknown_put_may_take_effect_late() {
        // The 503 came at time 1, the value showed up at time 20.
        assert_ok(&vec![
            put("a", Ret::Unknown, 0, 1),
            get(Ret::NotFound, 5, 6),
            put("b", Ret::Conflict("a"), 20, 21),
            put("a", Ret::AlreadyChosen, 22, 23),
        ]);
    }

    #[test]
    fn two_values_are_caught() {
        let h = vec![
            put("a", Ret::Created, 0, 1),
            get(Ret::Found("b"), 2, 3),
            put("b", Ret::Unknown, 0, 9),
        ];
        assert!(matches!(
            check(&h),
            Err(Violation::TwoValues {
                first: 0,
                second: 1,
                ..
            })
        ));
        let h = vec![
            put("a", Ret::Conflict("b"), 0, 1),
            put("b", Ret::Conflict("a"), 0, 1),
        ];
        assert!(matches!(check(&h), Err(Violation::TwoValues { .. })));
    }

    #[test]
    fn two_creations_are_caught() {
        // Same bytes, two requests, both "created" (what the writer tag prevents).
        let h = vec![put("a", Ret::Created, 0, 3), put("a", Ret::Created, 1, 4)];
        assert_eq!(
            check(&h),
            Err(Violation::TwoCreated {
                first: 0,
                second: 1
            })
        );
    }

    #[test]
    fn a_value_from_nowhere_is_caught() {
        let h = vec![get(Ret::Found("z"), 0, 1), put("a", Ret::Unknown, 0, 1)];
        assert!(matches!(
            check(&h),
            Err(Violation::NoWriter { observer: 0, .. })
        ));
        // AlreadyChosen is not a writer.
        let h = vec![put("a", Ret::AlreadyChosen, 0, 1)];
        assert!(matches!(check(&h), Err(Violation::NoWriter { .. })));
    }

    #[test]
    fn a_stale_empty_read_is_caught() {
        // After a completed creation.
        let h = vec![put("a", Ret::Created, 0, 1), get(Ret::NotFound, 2, 3)];
        assert!(matches!(
            check(&h),
            Err(Violation::RealTime {
                earlier: 0,
                later: 1,
                ..
            })
        ));
        // After a completed read of the value, the write being unknown.
        let h = vec![
            put("a", Ret::Unknown, 0, 1),
            get(Ret::Found("a"), 2, 3),
            get(Ret::NotFound, 4, 5),
        ];
        assert!(matches!(
            check(&h),
            Err(Violation::RealTime {
                earlier: 1,
                later: 2,
                ..
            })
        ));
        // After a conflict showed the value.
        let h = vec![
            put("a", Ret::Created, 0, 100),
            put("b", Ret::Conflict("a"), 1, 2),
            get(Ret::NotFound, 3, 4),
        ];
        assert!(matches!(
            check(&h),
            Err(Violation::RealTime {
                earlier: 1,
                later: 2,
                ..
            })
        ));
    }

    #[test]
    fn reading_a_value_before_its_put_began_is_caught() {
        let h = vec![get(Ret::Found("a"), 0, 1), put("a", Ret::Created, 2, 3)];
        assert!(matches!(
            check(&h),
            Err(Violation::RealTime {
                earlier: 0,
                later: 1,
                ..
            })
        ));
        // With two unknown candidates, the earlier one is a fine writer ...
        let h = vec![
            put("a", Ret::Unknown, 5, 6),
            get(Ret::Found("a"), 1, 2),
            put("a", Ret::Unknown, 0, 1),
        ];
        assert_ok(&h);
        // ... but not if it too began after the read ended.
        let h = vec![
            put("a", Ret::Unknown, 5, 6),
            get(Ret::Found("a"), 1, 2),
            put("a", Ret::Unknown, 3, 4),
        ];
        assert!(matches!(check(&h), Err(Violation::RealTime { .. })));
    }

    #[test]
    fn malformed_answers_are_caught() {
        let h = vec![put("a", Ret::Conflict("a"), 0, 1)];
        assert!(matches!(check(&h), Err(Violation::Malformed { op: 0, .. })));
        let h = vec![get(Ret::Created, 0, 1)];
        assert!(matches!(check(&h), Err(Violation::Malformed { op: 0, .. })));
        let mut h = vec![get(Ret::NotFound, 0, 1)];
        h[0].completed = None;
        assert!(matches!(check(&h), Err(Violation::Malformed { op: 0, .. })));
    }

    #[test]
    fn keys_are_checked_separately() {
        let mut h = vec![
            put("a", Ret::Created, 0, 1),
            put("b", Ret::Created, 0, 1),
            get(Ret::NotFound, 2, 3),
        ];
        h[1].key = "other".into();
        assert!(check_per_key(&h).is_err(), "key k has a stale read");
        h[2].key = "third".into();
        let lins = check_per_key(&h).expect("independent registers");
        assert_eq!(lins["k"].write, Some((0, "a")));
        assert_eq!(lins["other"].write, Some((1, "b")));
        assert_eq!(lins["third"].order, vec![2]);
    }

    /// Brute force: is there an order of a subset (all definite ops, any
    /// unknown ones) that [`replay`] accepts?
    fn linearizable_by_search(h: &H) -> bool {
        fn go(h: &H, order: &mut Vec<usize>, used: &mut Vec<bool>) -> bool {
            if replay(h, order).is_ok() {
                return true;
            }
            for i in 0..h.len() {
                if !used[i] {
                    used[i] = true;
                    order.push(i);
                    // Prune: the prefix must itself be a valid prefix.
                    if prefix_ok(h, order) && go(h, order, used) {
                        return true;
                    }
                    order.pop();
                    used[i] = false;
                }
            }
            false
        }
        fn prefix_ok(h: &H, order: &[usize]) -> bool {
            // Replay with every missing op treated as unknown-and-omitted.
            let relaxed: H = h
                .iter()
                .enumerate()
                .map(|(i, o)| {
                    let mut o = o.clone();
                    if !order.contains(&i) {
                        o.ret = Ret::Unknown;
                        o.completed = None;
                    }
                    o
                })
                .collect();
            replay(&relaxed, order).is_ok()
        }
        go(h, &mut Vec::new(), &mut vec![false; h.len()])
    }

    /// Tiny deterministic generator (xorshift), so the module needs no crates.
    struct Gen(u64);
    impl Gen {
        fn next(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    /// A random history of up to 6 operations. Half are produced by a
    /// correct register (each operation takes effect at a random point of
    /// its interval), some of those then get one answer or time nudged; the
    /// rest answer at random. So both verdicts and near misses are common.
    fn random_history(g: &mut Gen) -> H {
        const VALUES: [&str; 2] = ["a", "b"];
        let pick = |g: &mut Gen| VALUES[g.next(2) as usize];
        let n = 1 + g.next(6) as usize;
        let write_at = 8 + g.next(12) as u32;
        let value = pick(g);
        // The writer is op 0 (if the register gets written at all).
        let written = g.next(4) != 0;
        let mut h = Vec::new();
        if g.next(2) == 0 {
            for i in 0..n {
                let (inv, done, point);
                if i == 0 && written {
                    inv = write_at - g.next(8) as u32;
                    done = write_at + g.next(8) as u32;
                    point = write_at;
                } else {
                    inv = g.next(28) as u32;
                    done = inv + g.next(8) as u32;
                    point = inv + g.next(u64::from(done - inv + 1)) as u32;
                }
                let after = written && point >= write_at;
                let (call, ret) = if i == 0 && written {
                    (Call::Put(value), Ret::Created)
                } else if g.next(2) == 0 {
                    let v = pick(g);
                    let ret = match (after, v == value) {
                        (false, _) => Ret::Unknown,
                        (true, true) => Ret::AlreadyChosen,
                        (true, false) => Ret::Conflict(value),
                    };
                    (Call::Put(v), ret)
                } else {
                    (
                        Call::Get,
                        if after {
                            Ret::Found(value)
                        } else {
                            Ret::NotFound
                        },
                    )
                };
                let ret = if g.next(5) == 0 { Ret::Unknown } else { ret };
                h.push(op(call, ret, inv, done));
            }
            if g.next(3) == 0 {
                let i = g.next(n as u64) as usize;
                match g.next(3) {
                    0 => h[i].invoked = h[i].invoked.saturating_sub(1 + g.next(3) as u32),
                    1 => h[i].completed = h[i].completed.map(|t| t + 1 + g.next(3) as u32),
                    _ => {
                        h[i].ret = match (&h[i].call, g.next(3)) {
                            (Call::Put(_), 0) => Ret::Created,
                            (Call::Put(_), 1) => Ret::AlreadyChosen,
                            (Call::Put(v), _) => Ret::Conflict(if *v == "a" { "b" } else { "a" }),
                            (Call::Get, 0) => Ret::NotFound,
                            (Call::Get, _) => Ret::Found(pick(g)),
                        }
                    }
                }
            }
        } else {
            for _ in 0..n {
                let inv = g.next(20) as u32;
                let done = inv + g.next(8) as u32;
                let (call, ret) = if g.next(2) == 0 {
                    let v = pick(g);
                    let ret = match g.next(4) {
                        0 => Ret::Created,
                        1 => Ret::AlreadyChosen,
                        2 => Ret::Unknown,
                        _ => Ret::Conflict(if v == "a" { "b" } else { "a" }),
                    };
                    (Call::Put(v), ret)
                } else {
                    let ret = match g.next(3) {
                        0 => Ret::NotFound,
                        1 => Ret::Unknown,
                        _ => Ret::Found(pick(g)),
                    };
                    (Call::Get, ret)
                };
                h.push(op(call, ret, inv, done));
            }
        }
        h
    }

    /// The rules agree with a brute-force search over all orders on
    /// thousands of small random histories, and every witness replays.
    #[test]
    fn rules_agree_with_brute_force_search() {
        let mut g = Gen(0x9E37_79B9_7F4A_7C15);
        let (mut ok, mut bad) = (0, 0);
        for _ in 0..20_000 {
            let h = random_history(&mut g);
            let fast = check(&h);
            let slow = linearizable_by_search(&h);
            assert_eq!(
                fast.is_ok(),
                slow,
                "rules {fast:?} vs search {slow}\n{}",
                render(&h)
            );
            if let Ok(lin) = fast {
                replay(&h, &lin.order).unwrap_or_else(|e| panic!("{e}\n{}", render(&h)));
                ok += 1;
            } else {
                bad += 1;
            }
        }
        assert!(
            ok > 2_000 && bad > 2_000,
            "both verdicts exercised: {ok} ok, {bad} bad"
        );
    }
}
