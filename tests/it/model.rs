//! Random interleavings of write / persist / recover / abort, checked step
//! by step against a model of the bytes every session and handle must hold.

use tonic::Code;

use crate::harness::*;

/// SplitMix64: a tiny seeded generator, so a failing run can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

struct Handle {
    bytes: Vec<u8>,
    staging: usize,
    content: Vec<u8>,
    valid: bool,
}

struct Live {
    sid: String,
    staging: usize,
    content: Vec<u8>,
}

/// Runs `runs` interleavings; each writes its own target.
pub async fn run(t: &Target, runs: u64, seed: u64) {
    for i in 0..runs {
        let run_seed = seed.wrapping_add(i);
        eprintln!("model run {i} (seed {run_seed}) on {}", t.base);
        one(t, &format!("model-{i}"), run_seed).await;
    }
}

async fn one(t: &Target, name: &str, seed: u64) {
    let mut rng = Rng(seed);
    let uri = t.uri(name);
    let c = &mut t.client.clone();
    let mut stagings = 0usize;
    let mut lives: Vec<Live> = Vec::new();
    let mut zombies: Vec<(String, u64)> = Vec::new();
    let mut handles: Vec<Handle> = Vec::new();
    let mut log: Vec<String> = Vec::new();

    let steps = 5 + rng.below(25);
    for _ in 0..steps {
        let op = rng.below(100);
        if lives.is_empty() && (handles.is_empty() || op < 15) {
            let sid = open(c, &uri).await.unwrap();
            log.push(format!("open -> staging {stagings}"));
            lives.push(Live {
                sid,
                staging: stagings,
                content: Vec::new(),
            });
            stagings += 1;
        } else if op < 45 && !lives.is_empty() {
            let l = rng.below(lives.len());
            let live = &mut lives[l];
            let len = rng.below(40);
            let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            let start = live.content.len();
            let mut chunks = Vec::new();
            if rng.chance(20) && start > 0 {
                // A retry of bytes already accepted, overlapping the new ones.
                let back = 1 + rng.below(start.min(10));
                chunks.push(((start - back) as u64, live.content[start - back..].to_vec()));
            }
            let mut offset = 0;
            while offset < data.len() {
                let n = 1 + rng.below(data.len() - offset);
                chunks.push(((start + offset) as u64, data[offset..offset + n].to_vec()));
                offset += n;
            }
            if chunks.is_empty() {
                chunks.push((start as u64, Vec::new()));
            }
            live.content.extend_from_slice(&data);
            log.push(format!(
                "write {len} bytes at {start} on staging {}",
                live.staging
            ));
            let pos = write_chunks(c, &live.sid, chunks).await.unwrap();
            assert_eq!(pos, live.content.len() as u64, "seed {seed}: {log:?}");
        } else if op < 60 && !lives.is_empty() {
            let live = &lives[rng.below(lives.len())];
            let (bytes, pos) = persist(c, &live.sid).await.unwrap();
            assert_eq!(pos, live.content.len() as u64, "seed {seed}: {log:?}");
            log.push(format!(
                "persist staging {} at {pos} -> handle {}",
                live.staging,
                handles.len()
            ));
            handles.push(Handle {
                bytes,
                staging: live.staging,
                content: live.content.clone(),
                valid: true,
            });
        } else if op < 80 && !handles.is_empty() {
            let h = rng.below(handles.len());
            let result = recover(c, &handles[h].bytes).await;
            log.push(format!("recover handle {h} (valid: {})", handles[h].valid));
            if !handles[h].valid {
                expect_code(result, Code::FailedPrecondition);
                continue;
            }
            let (sid, pos) = result.unwrap_or_else(|e| panic!("seed {seed}: {e:?} after {log:?}"));
            let staging = handles[h].staging;
            let content = handles[h].content.clone();
            assert_eq!(pos, content.len() as u64);
            // The live session of that staging is fenced off.
            let (fenced, kept): (Vec<Live>, Vec<Live>) =
                lives.drain(..).partition(|l| l.staging == staging);
            lives = kept;
            zombies.extend(fenced.into_iter().map(|l| (l.sid, l.content.len() as u64)));
            // Bytes past the handle are gone, and so are handles that named them.
            for other in handles.iter_mut().filter(|o| o.staging == staging) {
                if other.content.len() > content.len() {
                    other.valid = false;
                }
            }
            lives.push(Live {
                sid,
                staging,
                content,
            });
        } else if op < 90 && !lives.is_empty() {
            let live = lives.remove(rng.below(lives.len()));
            log.push(format!("abort staging {}", live.staging));
            abort(c, &live.sid).await.unwrap();
            zombies.push((live.sid, live.content.len() as u64));
        } else if !zombies.is_empty() {
            let (sid, pos) = &zombies[rng.below(zombies.len())];
            log.push("write on an ended session".into());
            expect_code(
                write_at(c, sid, *pos, b"zz").await,
                Code::FailedPrecondition,
            );
        }
    }

    // Publish one outcome and check the bytes.
    let expected = if let Some(live) = lives.pop() {
        let (h, size) = close(c, &live.sid).await.unwrap();
        assert_eq!(size, live.content.len() as u64);
        commit(c, &h, false).await.unwrap();
        Some(live.content)
    } else if let Some(h) = handles.iter().rev().find(|h| h.valid) {
        commit(c, &h.bytes, false).await.unwrap();
        Some(h.content.clone())
    } else {
        None
    };
    let got = t.store.read(name).await;
    assert_eq!(
        got, expected,
        "seed {seed}: committed bytes differ after {log:?}"
    );
    for live in lives {
        abort(c, &live.sid).await.unwrap();
    }
}
