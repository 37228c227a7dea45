//! The layouts of [`Stamped`] in the Raft log, and how each older one reads
//! into today's. admit-raft stores the layout with every entry (entries of
//! builds before that carry none and are tried newest first); see its
//! `codec.rs`. Imports serde and admit-core's command types only.
//!
//! | layout | written by | command |
//! |--------|------------|---------|
//! | 1 | 3ca74d0 .. 0920f48 (unversioned) | [`CommandV1`]: restrictions without types |
//! | 2 | 0920f48 .. 08be5d8 (unversioned) | [`CommandV2`]: policies without back-off resets |
//! | 3 | 08be5d8 .. (unversioned, then versioned) | [`CommandV4`], no caller |
//! | 4 | 24e8cef and before .. | [`CommandV4`] with the caller of an audited change |
//! | 5 | the display numbers' introduction .. the scope claims' | today's [`Stamped`] without [`Command::ClaimScope`]: registrations with display numbers, outcomes with Meta's message id |
//! | 6 | the scope claims' introduction (issue 11, item 9) .. | today's [`Stamped`]: layout 5 and [`Command::ClaimScope`], a new last kind (so layout 5 reads as today's); written only for an entry holding a claim, every other entry is still written as layout 5 ([`of`]) |
//!
//! Builds before 3ca74d0 (the first day's work in progress, before inbound
//! and outcome reports had event keys) wrote a layout no release read back;
//! it is not kept.

use admit_core::legacy::{CommandV1, CommandV2, CommandV4};
use admit_core::{Command, Ts};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer};

use super::Stamped;

/// The layout this build writes.
pub(crate) const CURRENT: u32 = 6;
/// The layout before scope claims: today's encoding of every other command.
const BEFORE_CLAIMS: u32 = 5;

/// The layout an entry of `cmds` is written in: 6 only for an entry holding
/// a scope claim; any other entry encodes exactly as layout 5 (claims are the
/// last command kind), so a follower of a layout-5 build refuses only claims.
pub(crate) fn of(cmds: &[Stamped]) -> u32 {
    if cmds
        .iter()
        .any(|s| matches!(s.cmd, admit_core::Command::ClaimScope { .. }))
    {
        CURRENT
    } else {
        BEFORE_CLAIMS
    }
}

/// What entries without a stored layout may hold, newest first.
pub(crate) const UNVERSIONED: &[u32] = &[3, 2, 1];

/// [`Stamped`] with an older command.
#[derive(Deserialize)]
struct StampedAs<C> {
    at: Ts,
    cmd: C,
}

/// [`Stamped`] of layout 4: with its caller, and an older command.
#[derive(Deserialize)]
struct StampedByAs<C> {
    at: Ts,
    cmd: C,
    by: Option<String>,
}

impl<C: Into<Command>> From<StampedByAs<C>> for Stamped {
    fn from(s: StampedByAs<C>) -> Stamped {
        Stamped {
            at: s.at,
            cmd: s.cmd.into(),
            by: s.by,
        }
    }
}

impl<C: Into<Command>> From<StampedAs<C>> for Stamped {
    fn from(s: StampedAs<C>) -> Stamped {
        Stamped {
            at: s.at,
            cmd: s.cmd.into(),
            // those layouts did not record who made a change
            by: None,
        }
    }
}

/// One command of `layout`, as today's [`Stamped`].
pub(crate) fn decode<'de, D: Deserializer<'de>>(layout: u32, d: D) -> Result<Stamped, D::Error> {
    match layout {
        1 => StampedAs::<CommandV1>::deserialize(d).map(Into::into),
        2 => StampedAs::<CommandV2>::deserialize(d).map(Into::into),
        3 => StampedAs::<CommandV4>::deserialize(d).map(Into::into),
        4 => StampedByAs::<CommandV4>::deserialize(d).map(Into::into),
        // layout 6 only added a command kind after the others: 5 reads as 6
        5 | 6 => Stamped::deserialize(d),
        other => Err(D::Error::custom(format!(
            "command layout {other} is not known to this build"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use admit_core::{Dur, Policy, RestrictionType};
    use admit_core::{NumberId, PlatformEvent, Target};

    use super::*;
    use crate::app::ShardApp;

    /// One stored entry per older layout (tests/fixtures/log-entries/README.md).
    fn stored(layout: u32) -> &'static [u8] {
        match layout {
            1 => include_bytes!("../../../../tests/fixtures/log-entries/layout-1.bin"),
            2 => include_bytes!("../../../../tests/fixtures/log-entries/layout-2.bin"),
            3 => include_bytes!("../../../../tests/fixtures/log-entries/layout-3.bin"),
            4 => include_bytes!("../../../../tests/fixtures/log-entries/layout-4.bin"),
            _ => unreachable!(),
        }
    }

    /// What every fixture holds, read as today's commands; the restriction's
    /// types exist from layout 2 on.
    fn assert_the_fixture(cmds: &[Stamped], restriction_types: &[RestrictionType]) {
        let ats: Vec<u64> = cmds.iter().map(|s| s.at.0).collect();
        let t0 = 1_795_000_000_000;
        assert_eq!(ats, [t0, t0 + 1, t0 + 2, t0 + 3]);
        let Command::SetPolicy(p) = &cmds[0].cmd else {
            panic!("{:?}", cmds[0].cmd)
        };
        assert_eq!(
            (
                p.name.as_str(),
                p.throughput_mps,
                p.opt_out_keywords.clone()
            ),
            ("bulk", 40, vec!["HALT".to_string()])
        );
        // layouts 1 and 2 had no reset periods: the built-in 24 h
        let seeds = Policy::seeds();
        assert_eq!(p.pair_backoff_reset_after, Dur::hours(24));
        assert_eq!(
            p.throughput_backoff_reset_after,
            seeds.throughput_backoff_reset_after
        );
        let n = NumberId::parse("number", "100200300").unwrap();
        assert_eq!(
            cmds[1].cmd,
            Command::Platform {
                event: PlatformEvent::AccountRestriction {
                    target: Target::Number(n),
                    until: Some(Ts(1_800_000_000_000)),
                    lifted: false,
                    types: restriction_types.to_vec(),
                },
                event_key: Some("ev-1".into()),
            }
        );
        let Command::RegisterNumber(r) = &cmds[2].cmd else {
            panic!("{:?}", cmds[2].cmd)
        };
        assert_eq!(
            (r.number.as_ref(), r.profile.as_deref()),
            (Some(&n), Some("bulk"))
        );
        // layouts before 5 had no display numbers
        assert_eq!(r.display_phone_number, None);
        assert_eq!(cmds[3].cmd, Command::Tick);
    }

    #[test]
    fn entries_written_before_the_log_had_layouts_still_decode() {
        let biz = [RestrictionType::BizInitiated];
        for (layout, types) in [(1, &[][..]), (2, &biz[..]), (3, &biz[..])] {
            let cmds = admit_raft::decode_log_entry::<ShardApp>(stored(layout))
                .unwrap_or_else(|e| panic!("layout {layout}: {e}"));
            assert_the_fixture(&cmds, types);
        }
    }

    #[test]
    fn this_build_writes_its_layout_and_reads_it_back() {
        let mut cmds = admit_raft::decode_log_entry::<ShardApp>(stored(2)).unwrap();
        cmds[0].by = Some("ops".into());
        let bytes = admit_raft::encode_log_entry::<ShardApp>(3, 42, cmds.clone());
        // term 3, leader 0, index 42, a normal entry, then the versioned
        // payload: no claim in it, so layout 5 (see `of`)
        assert_eq!(bytes[..6], [3, 0, 42, 1, 0, BEFORE_CLAIMS as u8]);
        let back = admit_raft::decode_log_entry::<ShardApp>(&bytes).unwrap();
        let view = |v: &[Stamped]| -> Vec<(Ts, Command, Option<String>)> {
            v.iter()
                .map(|s| (s.at, s.cmd.clone(), s.by.clone()))
                .collect()
        };
        assert_eq!(view(&back), view(&cmds));
    }

    /// Layout 3 as the first versioned build wrote it: the unversioned
    /// fixture's commands behind the header `0, 3`.
    #[test]
    fn versioned_layout_3_entries_decode() {
        let old = stored(3);
        // term 3, leader 1, index 42, a normal entry; then the payload
        let mut bytes = old[..4].to_vec();
        bytes.extend([0, 3]);
        bytes.extend(&old[4..]);
        let cmds = admit_raft::decode_log_entry::<ShardApp>(&bytes).unwrap();
        assert_the_fixture(&cmds, &[RestrictionType::BizInitiated]);
        assert!(cmds.iter().all(|s| s.by.is_none()));
    }

    /// Layout 4 as the last build before display numbers and message ids
    /// wrote it (versioned, with the caller of the first command).
    #[test]
    fn layout_4_entries_decode() {
        let cmds = admit_raft::decode_log_entry::<ShardApp>(stored(4)).unwrap();
        assert_the_fixture(&cmds, &[RestrictionType::BizInitiated]);
        let by: Vec<Option<&str>> = cmds.iter().map(|s| s.by.as_deref()).collect();
        assert_eq!(by, [Some("ops"), None, None, None]);
    }

    /// Layout 5 (before scope claims) reads as today's: layout 6 only added
    /// a command kind after the others. An entry without a claim is still
    /// written as layout 5, so a follower of a layout-5 build takes it; one
    /// holding a claim is written as 6, which such a follower refuses by
    /// name (as the test below shows for this build and the next layout).
    #[test]
    fn layout_5_entries_decode() {
        let cmds = admit_raft::decode_log_entry::<ShardApp>(stored(4)).unwrap();
        let mut bytes = admit_raft::encode_log_entry::<ShardApp>(3, 42, cmds.clone());
        assert_eq!(bytes[5], 5, "no claim: written as layout 5");
        let back = admit_raft::decode_log_entry::<ShardApp>(&bytes).unwrap();
        assert_the_fixture(&back, &[RestrictionType::BizInitiated]);
        // the same bytes read as layout 6 too
        bytes[5] = 6;
        let back = admit_raft::decode_log_entry::<ShardApp>(&bytes).unwrap();
        assert_the_fixture(&back, &[RestrictionType::BizInitiated]);
        // a claim is written in layout 6 and reads back
        let n = NumberId::parse("number", "100200300").unwrap();
        let claim = Stamped {
            at: Ts(1),
            cmd: Command::ClaimScope {
                number: n,
                scope: admit_core::ScopeKey::Number(n),
            },
            by: None,
        };
        let bytes = admit_raft::encode_log_entry::<ShardApp>(3, 43, vec![claim.clone()]);
        assert_eq!(bytes[5], 6, "a claim: layout 6");
        let back = admit_raft::decode_log_entry::<ShardApp>(&bytes).unwrap();
        assert_eq!(back[0].cmd, claim.cmd);
        // in a batch with other commands too
        let mut batch = cmds.clone();
        batch.push(claim.clone());
        let bytes = admit_raft::encode_log_entry::<ShardApp>(3, 44, batch);
        assert_eq!(bytes[5], 6, "a batch holding a claim: layout 6");
    }

    #[test]
    fn a_layout_newer_than_this_build_is_refused_by_name() {
        let mut bytes = admit_raft::encode_log_entry::<ShardApp>(3, 42, Vec::new());
        bytes[5] = (CURRENT + 1) as u8;
        let e = admit_raft::decode_log_entry::<ShardApp>(&bytes).unwrap_err();
        assert!(e.contains("newer build"), "{e}");
    }
}
