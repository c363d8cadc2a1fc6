//! Commits that race for one target: the store decides, never a check
//! made before it (DESIGN.md 2, "Every commit is conditional").

use tonic::Code;

use crate::harness::*;

/// Whether a store enforces the create-only condition sluice sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preconditions {
    /// The store refuses a create-only write over an existing object, and
    /// decides atomically (S3, Azure, GCS, a file system, memory).
    Enforced,
    /// An emulator that accepts the condition and ignores it (both GCS
    /// emulators ignore `ifGenerationMatch` on compose): only what holds
    /// without it is checked, and the README says so.
    Ignored,
}

/// Eight sessions stage different bytes for one target, close, and commit
/// at the same moment, `rounds` times: exactly one commit answers OK, the
/// seven others ALREADY_EXISTS, and the target holds exactly the winner's
/// bytes.
pub async fn racing_commits_never_replace(t: &Target, rounds: u64, stores: Preconditions) {
    eprintln!(
        "conformance case: racing_commits_never_replace on {} ({stores:?})",
        t.base
    );
    for round in 0..rounds {
        let name = format!("race-{round}");
        let mut staged = Vec::new();
        for i in 0..8u64 {
            let c = &mut t.client.clone();
            let sid = open(c, &t.uri(&name)).await.unwrap();
            let data = crate::multipart::bytes(round * 100 + i, 1000 + i as usize);
            write_at(c, &sid, 0, &data).await.unwrap();
            let (handle, _) = close(c, &sid).await.unwrap();
            staged.push((handle, data));
        }
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(8));
        let commits: Vec<_> = staged
            .iter()
            .map(|(handle, _)| {
                let (mut c, handle, barrier) = (t.client.clone(), handle.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    commit(&mut c, &handle, false).await
                })
            })
            .collect();
        let mut results = Vec::new();
        for commit in commits {
            results.push(commit.await.unwrap());
        }
        let winners: Vec<usize> = (0..8).filter(|&i| results[i].is_ok()).collect();
        for (i, result) in results.iter().enumerate() {
            if let Err(status) = result {
                assert_eq!(
                    status.code(),
                    Code::AlreadyExists,
                    "round {round}, commit {i}: {status:?}"
                );
            }
        }
        let got = t
            .store
            .read(&name)
            .await
            .expect("no commit published the target");
        match stores {
            Preconditions::Enforced => {
                assert_eq!(
                    winners.len(),
                    1,
                    "round {round}: {} commits of one target answered OK",
                    winners.len()
                );
                assert!(
                    got == staged[winners[0]].1,
                    "round {round}: the target is not the bytes of the commit that answered OK"
                );
            }
            Preconditions::Ignored => {
                assert!(!winners.is_empty(), "round {round}: no commit answered OK");
                assert!(
                    winners.iter().any(|&w| got == staged[w].1),
                    "round {round}: the target holds bytes no successful commit staged"
                );
            }
        }
    }
}
