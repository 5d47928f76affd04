//! The write-once-register checker that `tests/simulation.rs` and
//! `tests/jepsen.rs` judge their histories with (`tests/support/history.rs`),
//! checked on hand-made histories: what it must accept, every violation it
//! must catch, and agreement with a brute-force search. Its own file, so that
//! these run once and not in every test binary that says `mod support;`.

mod support;

use support::history::*;

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
