//! The conformance suite: plain async functions, each one case, run against
//! every backend through the real server. Flink's own recoverable-writer
//! cases come first (numbered as in the core issue), then the offset rules
//! of DESIGN.md 1.2 and the status codes of 1.3.

use tonic::Code;

use crate::harness::*;

mod namespace;
mod protocol;
mod race;

use namespace::*;
use protocol::*;
pub use race::{Preconditions, racing_commits_never_replace};

const D1: &[u8] = b"first chunk of data, ";
const D2: &[u8] = b"second chunk follows, ";
const D3: &[u8] = b"third and last chunk.";

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// Runs every case against `t`, naming each case as it starts so a failure
/// says which one broke.
pub async fn run_all(t: &Target) {
    macro_rules! cases {
        ($($case:ident),* $(,)?) => {
            $(
                eprintln!("conformance case: {} on {}", stringify!($case), t.base);
                $case(t).await;
            )*
        };
    }
    cases!(
        flink_01_empty_file_commits_as_empty_file,
        flink_02_write_close_commit,
        flink_03_persist_then_write_more,
        flink_04_recover_handle_taken_before_any_write,
        flink_05_recover_discards_bytes_after_handle,
        flink_06_recover_second_of_two_back_to_back_persists,
        flink_07_recover_after_two_chunks,
        flink_08_commit_after_recovery_is_idempotent,
        flink_09_write_after_close_fails,
        flink_10_recover_after_commit_fails,
        retried_close_for_commit_returns_the_same_handle,
        flink_11_recover_earlier_handle_invalidates_later,
        commit_of_handle_cut_off_by_recovery_is_refused,
        offsets_make_writes_idempotent,
        offset_gap_is_out_of_range,
        damaged_messages_are_data_loss_and_crc32c_is_answered,
        many_chunks_in_one_call_and_across_calls,
        unknown_session_is_not_found,
        aborted_session_refuses_write_and_persist,
        abort_without_handle_leaves_nothing,
        commit_never_replaces_existing_target,
        commit_after_recovery_with_other_size_fails,
        commit_after_recovery_with_nothing_left_fails,
        commit_of_resume_handle_publishes_its_prefix,
        recover_twice_from_same_handle_fences_first,
        tampered_handles_are_invalid_and_change_nothing,
        commit_handle_cannot_be_recovered,
        cleanup_is_idempotent,
        concurrent_write_on_one_session_is_aborted,
        bad_paths_are_invalid_arguments,
        read_side_sees_committed_files_only,
        read_ranges_and_missing_paths,
        delete_files_and_directories,
        mkdirs_then_write_inside,
        rename_never_replaces,
    );
}

/// The scheme's part size (0 for file://).
pub async fn part_size(t: &Target) -> usize {
    t.client
        .clone()
        .capabilities(sluice::proto::CapabilitiesRequest { path: t.uri("x") })
        .await
        .unwrap()
        .into_inner()
        .min_part_size as usize
}

async fn committed(t: &Target, name: &str) -> Vec<u8> {
    t.store
        .read(name)
        .await
        .unwrap_or_else(|| panic!("{name} was not committed"))
}

/// Nothing of `name` but its committed target is left: no hidden
/// in-progress file, no tail object.
pub async fn assert_no_staging_left(t: &Target, name: &str) {
    let staged = format!(".{name}.");
    let hidden: Vec<_> = t
        .store
        .entries()
        .await
        .into_iter()
        .filter(|(entry, _)| entry.rsplit('/').next().unwrap().starts_with(&staged))
        .collect();
    assert!(hidden.is_empty(), "staging left behind: {hidden:?}");
}

pub async fn flink_01_empty_file_commits_as_empty_file(t: &Target) {
    let c = &mut t.client.clone();
    let sid = open(c, &t.uri("f01")).await.unwrap();
    let (h, size) = close(c, &sid).await.unwrap();
    assert_eq!(size, 0);
    assert_eq!(commit(c, &h, false).await.unwrap(), 0);
    assert_eq!(committed(t, "f01").await, b"");
    assert_no_staging_left(t, "f01").await;
    if let Some(open) = t.store.open_uploads() {
        assert_eq!(open, 0, "the upload of an empty file was left open");
    }
}

pub async fn flink_02_write_close_commit(t: &Target) {
    let c = &mut t.client.clone();
    let sid = open(c, &t.uri("f02")).await.unwrap();
    assert_eq!(write_at(c, &sid, 0, D1).await.unwrap(), D1.len() as u64);
    let (h, size) = close(c, &sid).await.unwrap();
    assert_eq!(size, D1.len() as u64);
    commit(c, &h, false).await.unwrap();
    assert_eq!(committed(t, "f02").await, D1);
    assert_no_staging_left(t, "f02").await;
}

pub async fn flink_03_persist_then_write_more(t: &Target) {
    let c = &mut t.client.clone();
    let sid = open(c, &t.uri("f03")).await.unwrap();
    write_at(c, &sid, 0, D1).await.unwrap();
    let (_, pos) = persist(c, &sid).await.unwrap();
    assert_eq!(pos, D1.len() as u64);
    write_at(c, &sid, pos, D2).await.unwrap();
    let (h, _) = close(c, &sid).await.unwrap();
    commit(c, &h, false).await.unwrap();
    assert_eq!(committed(t, "f03").await, cat(&[D1, D2]));
}

pub async fn flink_04_recover_handle_taken_before_any_write(t: &Target) {
    let c = &mut t.client.clone();
    let sid = open(c, &t.uri("f04")).await.unwrap();
    let (h0, pos) = persist(c, &sid).await.unwrap();
    assert_eq!(pos, 0);
    write_at(c, &sid, 0, D1).await.unwrap();
    let (sid2, pos) = recover(c, &h0).await.unwrap();
    assert_eq!(pos, 0, "recovered in-progress file is not empty");
    write_at(c, &sid2, 0, D3).await.unwrap();
    let (h, _) = close(c, &sid2).await.unwrap();
    commit(c, &h, false).await.unwrap();
    assert_eq!(committed(t, "f04").await, D3);
}

pub async fn flink_05_recover_discards_bytes_after_handle(t: &Target) {
    let c = &mut t.client.clone();
    let sid = open(c, &t.uri("f05")).await.unwrap();
    write_at(c, &sid, 0, D1).await.unwrap();
    let (r, _) = persist(c, &sid).await.unwrap();
    write_at(c, &sid, D1.len() as u64, D2).await.unwrap();
    abort(c, &sid).await.unwrap();
    let (sid2, pos) = recover(c, &r).await.unwrap();
    assert_eq!(pos, D1.len() as u64);
    write_at(c, &sid2, pos, D3).await.unwrap();
    let (h, _) = close(c, &sid2).await.unwrap();
    commit(c, &h, false).await.unwrap();
    assert_eq!(committed(t, "f05").await, cat(&[D1, D3]));
}

pub async fn flink_06_recover_second_of_two_back_to_back_persists(t: &Target) {
    let c = &mut t.client.clone();
    let sid = open(c, &t.uri("f06")).await.unwrap();
    write_at(c, &sid, 0, D1).await.unwrap();
    let (_r1, _) = persist(c, &sid).await.unwrap();
    let (r2, _) = persist(c, &sid).await.unwrap();
    let (sid2, pos) = recover(c, &r2).await.unwrap();
    assert_eq!(pos, D1.len() as u64);
    write_at(c, &sid2, pos, D3).await.unwrap();
    let (h, _) = close(c, &sid2).await.unwrap();
    commit(c, &h, false).await.unwrap();
    assert_eq!(committed(t, "f06").await, cat(&[D1, D3]));
}

pub async fn flink_07_recover_after_two_chunks(t: &Target) {
    let c = &mut t.client.clone();
    let sid = open(c, &t.uri("f07")).await.unwrap();
    write_at(c, &sid, 0, D1).await.unwrap();
    write_at(c, &sid, D1.len() as u64, D2).await.unwrap();
    let (r, _) = persist(c, &sid).await.unwrap();
    let (sid2, pos) = recover(c, &r).await.unwrap();
    assert_eq!(pos, (D1.len() + D2.len()) as u64);
    write_at(c, &sid2, pos, D3).await.unwrap();
    let (h, _) = close(c, &sid2).await.unwrap();
    commit(c, &h, false).await.unwrap();
    assert_eq!(committed(t, "f07").await, cat(&[D1, D2, D3]));
}

pub async fn flink_08_commit_after_recovery_is_idempotent(t: &Target) {
    let c = &mut t.client.clone();
    let sid = open(c, &t.uri("f08")).await.unwrap();
    write_at(c, &sid, 0, D1).await.unwrap();
    persist(c, &sid).await.unwrap();
    persist(c, &sid).await.unwrap();
    write_at(c, &sid, D1.len() as u64, D2).await.unwrap();
    let (h, size) = close(c, &sid).await.unwrap();
    assert_eq!(commit(c, &h, true).await.unwrap(), size);
    assert_eq!(committed(t, "f08").await, cat(&[D1, D2]));
    assert_eq!(
        commit(c, &h, true).await.unwrap(),
        size,
        "a repeated commit after recovery must succeed"
    );
    assert_eq!(committed(t, "f08").await, cat(&[D1, D2]));
    let msg = expect_code(commit(c, &h, false).await, Code::AlreadyExists);
    assert!(msg.contains("f08"), "{msg}");
    assert_no_staging_left(t, "f08").await;
}

pub async fn flink_09_write_after_close_fails(t: &Target) {
    let c = &mut t.client.clone();
    let sid = open(c, &t.uri("f09")).await.unwrap();
    write_at(c, &sid, 0, D1).await.unwrap();
    close(c, &sid).await.unwrap();
    let msg = expect_code(
        write_at(c, &sid, D1.len() as u64, D2).await,
        Code::FailedPrecondition,
    );
    assert!(msg.contains(&sid), "{msg}");
    expect_code(persist(c, &sid).await, Code::FailedPrecondition);
}

/// A CloseForCommit whose answer was lost is sent again: it returns the
/// same handle instead of failing, and the file commits once.
pub async fn retried_close_for_commit_returns_the_same_handle(t: &Target) {
    let c = &mut t.client.clone();
    let sid = open(c, &t.uri("close-twice")).await.unwrap();
    write_at(c, &sid, 0, D1).await.unwrap();
    let first = close(c, &sid).await.unwrap();
    let again = close(c, &sid).await.unwrap();
    assert_eq!(first, again);
    commit(c, &again.0, false).await.unwrap();
    assert_eq!(committed(t, "close-twice").await, D1);
    // Still refused for writes, and for a session that was aborted.
    expect_code(write_at(c, &sid, 0, D1).await, Code::FailedPrecondition);
    let aborted = open(c, &t.uri("close-aborted")).await.unwrap();
    abort(c, &aborted).await.unwrap();
    expect_code(close(c, &aborted).await, Code::FailedPrecondition);
}

pub async fn flink_10_recover_after_commit_fails(t: &Target) {
    let c = &mut t.client.clone();
    let sid = open(c, &t.uri("f10")).await.unwrap();
    write_at(c, &sid, 0, D1).await.unwrap();
    let (r, _) = persist(c, &sid).await.unwrap();
    write_at(c, &sid, D1.len() as u64, D2).await.unwrap();
    let (h, _) = close(c, &sid).await.unwrap();
    commit(c, &h, false).await.unwrap();
    expect_code(recover(c, &r).await, Code::FailedPrecondition);
    assert_eq!(committed(t, "f10").await, cat(&[D1, D2]));
}

pub async fn flink_11_recover_earlier_handle_invalidates_later(t: &Target) {
    let c = &mut t.client.clone();
    let sid = open(c, &t.uri("f11")).await.unwrap();
    write_at(c, &sid, 0, D1).await.unwrap();
    let (r1, _) = persist(c, &sid).await.unwrap();
    write_at(c, &sid, D1.len() as u64, D2).await.unwrap();
    let (r2, _) = persist(c, &sid).await.unwrap();
    write_at(c, &sid, (D1.len() + D2.len()) as u64, D3)
        .await
        .unwrap();
    abort(c, &sid).await.unwrap();
    let (sid2, pos) = recover(c, &r1).await.unwrap();
    assert_eq!(pos, D1.len() as u64);
    expect_code(recover(c, &r2).await, Code::FailedPrecondition);
    // The recovered session is unharmed by the refused recovery.
    write_at(c, &sid2, pos, D3).await.unwrap();
    let (h, _) = close(c, &sid2).await.unwrap();
    commit(c, &h, false).await.unwrap();
    assert_eq!(committed(t, "f11").await, cat(&[D1, D3]));
}

/// Persist A, write on, persist B, Recover(A), write other bytes, then
/// Commit(B): B's bytes past A are gone, so the commit must be refused (as
/// Recover(B) is) rather than publish a file that matches no handle, and
/// the live session must be left alone. Then the new generation commits.
pub async fn commit_of_handle_cut_off_by_recovery_is_refused(t: &Target) {
    let c = &mut t.client.clone();
    let a_bytes = vec![b'a'; 100];
    let b_bytes = vec![b'b'; 100];
    let new_bytes = vec![b'n'; 150];
    let sid = open(c, &t.uri("stale")).await.unwrap();
    write_at(c, &sid, 0, &a_bytes).await.unwrap();
    let (a, _) = persist(c, &sid).await.unwrap();
    write_at(c, &sid, 100, &b_bytes).await.unwrap();
    let (b, pos) = persist(c, &sid).await.unwrap();
    assert_eq!(pos, 200);
    let (sid2, pos) = recover(c, &a).await.unwrap();
    assert_eq!(pos, 100);
    write_at(c, &sid2, 100, &new_bytes).await.unwrap();
    for after_recovery in [false, true] {
        let msg = expect_code(
            commit(c, &b, after_recovery).await,
            Code::FailedPrecondition,
        );
        assert!(msg.contains("later Recover"), "{msg}");
    }
    expect_code(recover(c, &b).await, Code::FailedPrecondition);
    assert!(
        t.store.read("stale").await.is_none(),
        "a refused commit published something"
    );
    // The recovered session goes on undisturbed.
    write_at(c, &sid2, 250, b"!").await.unwrap();
    let (h, size) = close(c, &sid2).await.unwrap();
    assert_eq!(size, 251);
    commit(c, &h, false).await.unwrap();
    assert_eq!(
        committed(t, "stale").await,
        cat(&[&a_bytes, &new_bytes, b"!"])
    );
}
