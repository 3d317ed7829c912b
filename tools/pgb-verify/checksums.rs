//! Re-read every file of an artifact and compare size, sha256 and blake3
//! with the record.

use std::fs::File;

use pgb_common::digest::hash_reader_parallel;
use pgb_common::record::Artifact;

use crate::run::{file_path, Verdict};

pub fn check(a: &Artifact) -> Verdict {
    let mut problems = Vec::new();
    let mut bytes = 0u64;
    for f in &a.files {
        let path = file_path(a, f);
        let shown = path.display();
        let d = match File::open(&path).and_then(hash_reader_parallel) {
            Ok(d) => d,
            Err(e) => {
                problems.push(format!("{shown}: {}", pgb_common::error::io_cause(&e)));
                continue;
            }
        };
        bytes += d.size;
        if d.size != f.size {
            problems.push(format!("{shown}: {} bytes, recorded {}", d.size, f.size));
        } else if d.sha256 != f.sha256 {
            problems.push(format!(
                "{shown}: sha256 {} differs from the recorded {}",
                d.sha256, f.sha256
            ));
        } else if d.blake3 != f.blake3 {
            problems.push(format!(
                "{shown}: blake3 {} differs from the recorded {}",
                d.blake3, f.blake3
            ));
        }
    }
    Verdict::new(problems).with("bytes", bytes.into())
}
