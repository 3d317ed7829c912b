//! pgb-encrypt against real backups and the reference `age` command, both
//! ways, and every refusal the design promises.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{json, Value};

use crate::util::*;

/// What one run of pgb-encrypt left.
struct Out {
    code: i32,
    recs: Vec<Value>,
    stdout: Vec<u8>,
    stderr: String,
}

/// Runs pgb-encrypt with `stdin` fed in; asserts that no secret key ever
/// reaches stdout or stderr.
fn encrypt_cmd(args: &[&str], stdin: &[u8]) -> Out {
    let mut child = Command::new(bin("pgb-encrypt"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    let stdout_text = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    for secret in ["AGE-SECRET-KEY", "PRIVATE KEY"] {
        assert!(
            !stdout_text.contains(secret) && !stderr.contains(secret),
            "a secret reached the output of pgb-encrypt {args:?}:\n{stderr}"
        );
    }
    let code = out.status.code().unwrap_or(-1);
    let recs = if args.contains(&"--file") {
        Vec::new()
    } else {
        records(&out.stdout)
    };
    Out {
        code,
        recs,
        stdout: out.stdout,
        stderr,
    }
}

fn lines(recs: &[Value]) -> Vec<u8> {
    let mut s = Vec::new();
    for r in recs {
        writeln!(s, "{r}").unwrap();
    }
    s
}

/// An age key pair made by age-keygen: (identity file, recipient).
fn age_key(dir: &Path, name: &str) -> (PathBuf, String) {
    let id = dir.join(name);
    run(Command::new("age-keygen")
        .arg("-o")
        .arg(&id)
        .stderr(Stdio::null()));
    fs::set_permissions(&id, fs::Permissions::from_mode(0o600)).unwrap();
    let out = run(Command::new("age-keygen").arg("-y").arg(&id));
    (
        id,
        String::from_utf8(out.stdout).unwrap().trim().to_string(),
    )
}

fn sha256(path: &Path) -> String {
    stock_sums(path).0
}

fn location(a: &Value) -> PathBuf {
    Path::new(a["repo"].as_str().unwrap()).join(a["path"].as_str().unwrap())
}

/// Names of temp files left anywhere below `dir`.
fn temps(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p.clone());
            }
            if e.file_name().to_string_lossy().contains(".pgb-tmp.") {
                out.push(p.display().to_string());
            }
        }
    }
    out
}

fn small_db(c: &Cluster) {
    c.sql("postgres", "CREATE DATABASE appdb; ");
    c.sql(
        "appdb",
        "CREATE TABLE t (id int PRIMARY KEY, v text); \
         INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 20000) g;",
    );
}

/// `age -d -i ID FILE` into `out`.
fn age_decrypt(id: &Path, file: &Path, out: &Path) {
    run(Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(id)
        .arg("-o")
        .arg(out)
        .arg(file));
}

/// `age FLAG RECIPIENT -o CT PLAIN` (FLAG: -r for a key, -R for a file).
fn age_encrypt(flag: &str, recipient: impl AsRef<std::ffi::OsStr>, plain: &Path, ct: &Path) {
    run(Command::new("age")
        .arg(flag)
        .arg(recipient)
        .arg("-o")
        .arg(ct)
        .arg(plain));
}

/// The arguments of `pgb-encrypt -d -i ID --file CT -o OUT`.
fn decrypt_args(id: &Path, ct: &Path, out: &str) -> Vec<String> {
    let p = |x: &Path| x.to_str().unwrap().to_string();
    ["-d", "-i", &p(id), "--file", &p(ct), "-o", out]
        .map(String::from)
        .to_vec()
}

/// `pgb-encrypt -d -i ID --file CT -o OUT`.
fn decrypt_file(id: &Path, ct: &Path, out: &str) -> Out {
    let args = decrypt_args(id, ct, out);
    encrypt_cmd(&args.iter().map(String::as_str).collect::<Vec<_>>(), b"")
}

#[test]
fn dumps_encrypt_to_what_age_decrypts_and_come_back() {
    let c = Cluster::new();
    small_db(&c);
    let repo = Scratch::new("repo");
    let keys = Scratch::new("keys");
    let (id, recipient) = age_key(&keys.path, "id.txt");
    let plain = snapshot_records(&c, &repo.path, &["-d", "appdb", "--globals"]);
    assert_eq!(plain.len(), 2);

    let out = encrypt_cmd(&["-r", &recipient], &lines(&plain));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.recs.len(), 2);
    for (p, e) in plain.iter().zip(&out.recs) {
        assert_eq!(e["id"], p["id"]);
        assert_eq!(
            e["path"],
            json!(format!("{}.age", p["path"].as_str().unwrap()))
        );
        let enc = &e["encryption"];
        assert_eq!(enc["scheme"], "age");
        assert_eq!(enc["recipients"], json!([recipient]));
        assert_eq!(enc["plaintext"], p["files"]);
        assert!(enc["when"].as_str().unwrap().contains('T'));
        let f = &e["files"][0];
        assert_eq!(
            f["name"],
            json!(format!("{}.age", p["files"][0]["name"].as_str().unwrap()))
        );
        // The record describes the ciphertext as stored...
        let ct = location(e);
        let (sha, b3) = stock_sums(&ct);
        assert_eq!(f["sha256"], json!(sha));
        assert_eq!(f["blake3"], json!(b3));
        assert_eq!(f["size"], json!(fs::metadata(&ct).unwrap().len()));
        assert_eq!(
            fs::metadata(&ct).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // ...the stock age command decrypts it to the recorded plaintext...
        let back = keys.path.join("back");
        age_decrypt(&id, &ct, &back);
        assert_eq!(json!(sha256(&back)), p["files"][0]["sha256"]);
        fs::remove_file(&back).unwrap();
        // ...its sidecar holds the new record, and the plaintext is kept.
        let side: Value = serde_json::from_str(
            &fs::read_to_string(format!("{}.pgb.json", ct.display())).unwrap(),
        )
        .unwrap();
        assert_eq!(&side, e);
        assert!(location(p).exists());
    }

    // Idempotent: plaintext records again give the same encrypted records;
    // encrypted records pass through byte for byte.
    let again = encrypt_cmd(&["-r", &recipient], &lines(&plain));
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(again.recs, out.recs);
    let through = encrypt_cmd(&["-r", &recipient], &out.stdout);
    assert_eq!(through.code, 0, "{}", through.stderr);
    assert_eq!(through.stdout, out.stdout);
    // --repo prints each artifact once, encrypted.
    let repo_run = encrypt_cmd(
        &["-r", &recipient, "--repo", repo.path.to_str().unwrap()],
        b"",
    );
    assert_eq!(repo_run.code, 0, "{}", repo_run.stderr);
    let mut got = repo_run.recs.clone();
    let mut want = out.recs.clone();
    let by_id = |a: &Value, b: &Value| a["id"].as_str().cmp(&b["id"].as_str());
    got.sort_by(by_id);
    want.sort_by(by_id);
    assert_eq!(got, want);

    // Decrypt back, with the plaintext gone: restored, checked, recorded.
    for p in &plain {
        fs::remove_file(location(p)).unwrap();
    }
    // Replaying the plaintext records now still gives the encrypted ones.
    let replay = encrypt_cmd(&["-r", &recipient], &lines(&plain));
    assert_eq!(replay.code, 0, "{}", replay.stderr);
    assert_eq!(replay.recs, out.recs);
    let dec = encrypt_cmd(&["-d", "-i", id.to_str().unwrap()], &out.stdout);
    assert_eq!(dec.code, 0, "{}", dec.stderr);
    for (p, d) in plain.iter().zip(&dec.recs) {
        assert_eq!(d["path"], p["path"]);
        assert_eq!(d["files"], p["files"]);
        assert!(d.get("encryption").is_none(), "{d}");
        assert_eq!(json!(sha256(&location(d))), p["files"][0]["sha256"]);
    }
    // The decrypted dump is a real one: pgb-verify checks it.
    let mut verify = c
        .tool("pgb-verify")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    verify.stdin.take().unwrap().write_all(&dec.stdout).unwrap();
    let v = verify.wait_with_output().unwrap();
    assert_eq!(
        v.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&v.stderr)
    );
    assert!(temps(&repo.path).is_empty());
}

#[test]
fn physical_backup_is_encrypted_file_by_file_and_comes_back_whole() {
    let c = Cluster::new();
    let repo = Scratch::new("repo");
    let keys = Scratch::new("keys");
    let (id, recipient) = age_key(&keys.path, "id.txt");
    let rfile = keys.path.join("recipients.txt");
    fs::write(&rfile, format!("# backup key\n\n{recipient}\n")).unwrap();
    let plain = snapshot_records(&c, &repo.path, &["--physical"]);
    let p = &plain[0];
    let dir = location(p);
    let original = keys.path.join("original");
    run(Command::new("cp").arg("-a").arg(&dir).arg(&original));
    let names: Vec<String> = p["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_string())
        .collect();
    assert!(names.contains(&"backup_manifest".to_string()), "{names:?}");

    let out = encrypt_cmd(
        &["-R", rfile.to_str().unwrap(), "--remove-plaintext"],
        &lines(&plain),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let e = &out.recs[0];
    assert_eq!(e["path"], p["path"]);
    assert_eq!(e["encryption"]["plaintext"], p["files"]);
    // Only ciphertext is left in the directory, each file decrypting with
    // the stock age command to the recorded plaintext.
    let mut left: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    let mut want: Vec<String> = names.iter().map(|n| format!("{n}.age")).collect();
    want.sort();
    assert_eq!(left, want);
    for (f, pf) in e["files"]
        .as_array()
        .unwrap()
        .iter()
        .zip(p["files"].as_array().unwrap())
    {
        let ct = dir.join(f["name"].as_str().unwrap());
        assert_eq!(json!(sha256(&ct)), f["sha256"]);
        let back = keys.path.join("back");
        age_decrypt(&id, &ct, &back);
        assert_eq!(json!(sha256(&back)), pf["sha256"]);
        fs::remove_file(&back).unwrap();
    }
    // The directory's sidecar holds the encrypted record.
    let side: Value =
        serde_json::from_str(&fs::read_to_string(format!("{}.pgb.json", dir.display())).unwrap())
            .unwrap();
    assert_eq!(&side, e);

    // Decrypted back, byte for byte the original.
    let dec = encrypt_cmd(&["-d", "-i", id.to_str().unwrap()], &out.stdout);
    assert_eq!(dec.code, 0, "{}", dec.stderr);
    assert_eq!(dec.recs[0]["files"], p["files"]);
    for n in &names {
        assert_eq!(
            fs::read(dir.join(n)).unwrap(),
            fs::read(original.join(n)).unwrap(),
            "{n}"
        );
    }
    assert!(temps(&repo.path).is_empty());
}

/// A plaintext record as pgb-snapshot would write it, for a file made here.
fn fake_artifact(repo: &Path, name: &str, bytes: &[u8]) -> Value {
    let dir = repo.join("main/logical/appdb");
    fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    fs::write(&path, bytes).unwrap();
    let (sha, b3) = stock_sums(&path);
    let rec = json!({
        "schema": "pgb.v1", "type": "artifact", "id": format!("logical-appdb-{name}"),
        "kind": "logical", "cluster": "main", "database": "appdb",
        "created": "2026-11-21T02:00:00Z", "repo": repo.to_str().unwrap(),
        "path": format!("main/logical/appdb/{name}"),
        "files": [{"name": name, "size": bytes.len(), "sha256": sha, "blake3": b3}],
        "copies": [], "verified": []
    });
    fs::write(
        format!("{}.pgb.json", path.display()),
        serde_json::to_string_pretty(&rec).unwrap(),
    )
    .unwrap();
    rec
}

#[test]
fn damaged_plaintext_is_never_encrypted_and_never_removed() {
    let repo = Scratch::new("repo");
    let keys = Scratch::new("keys");
    let (_, recipient) = age_key(&keys.path, "id.txt");
    let good = fake_artifact(&repo.path, "good.dump", &vec![7u8; 300_000]);
    let bad = fake_artifact(&repo.path, "bad.dump", &vec![9u8; 300_000]);
    // One flipped byte after the checksums were taken.
    let bad_path = location(&bad);
    let mut bytes = fs::read(&bad_path).unwrap();
    bytes[123_456] ^= 1;
    fs::write(&bad_path, &bytes).unwrap();
    let upstream_error =
        json!({"schema": "pgb.v1", "type": "error", "tool": "pgb-snapshot", "message": "boom"});

    let out = encrypt_cmd(
        &["-r", &recipient, "--remove-plaintext"],
        &lines(&[bad.clone(), upstream_error.clone(), good.clone()]),
    );
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert_eq!(out.recs.len(), 3);
    // The damaged artifact became an error record carrying it as it was.
    assert_eq!(out.recs[0]["type"], "error");
    assert_eq!(out.recs[0]["tool"], "pgb-encrypt");
    assert_eq!(out.recs[0]["artifact"], bad);
    let msg = out.recs[0]["message"].as_str().unwrap();
    assert!(
        msg.contains("bad.dump") && msg.contains("does not match its record"),
        "{msg}"
    );
    assert!(
        out.stderr.contains("does not match its record"),
        "{}",
        out.stderr
    );
    // Upstream errors pass through untouched; the good one is encrypted.
    assert_eq!(out.recs[1], upstream_error);
    assert_eq!(out.recs[2]["type"], "artifact");
    assert!(out.recs[2]["encryption"].is_object());
    // The damaged plaintext and its sidecar are kept, no ciphertext appeared;
    // the good plaintext went only after its ciphertext was recorded.
    assert!(bad_path.exists());
    assert!(Path::new(&format!("{}.pgb.json", bad_path.display())).exists());
    assert!(!Path::new(&format!("{}.age", bad_path.display())).exists());
    assert!(!location(&good).exists());
    assert!(!Path::new(&format!("{}.pgb.json", location(&good).display())).exists());
    assert!(location(&out.recs[2]).exists());
    assert!(temps(&repo.path).is_empty());
}

/// Runs `cmd` as given (age, ssh-keygen), returning its stdout.
fn sh(cmd: &mut Command) -> Vec<u8> {
    run(cmd).stdout
}

#[test]
fn age_cli_output_decrypts_with_pgb_encrypt_and_back() {
    let dir = Scratch::new("files");
    let (id, recipient) = age_key(&dir.path, "id.txt");
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 31 % 253) as u8).collect();
    let plain = dir.path.join("notes.bin");
    fs::write(&plain, &data).unwrap();

    // age -r ... | pgb-encrypt -d
    let by_age = dir.path.join("by-age.age");
    age_encrypt("-r", &recipient, &plain, &by_age);
    let back = dir.path.join("back1");
    let out = decrypt_file(&id, &by_age, back.to_str().unwrap());
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.is_empty());
    assert_eq!(fs::read(&back).unwrap(), data);
    // -o - streams the plaintext to stdout.
    let out = decrypt_file(&id, &by_age, "-");
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, data);

    // pgb-encrypt --file (default output name IN.age) | age -d
    let out = encrypt_cmd(&["-r", &recipient, "--file", plain.to_str().unwrap()], b"");
    assert_eq!(out.code, 0, "{}", out.stderr);
    let ct = dir.path.join("notes.bin.age");
    let back = dir.path.join("back2");
    age_decrypt(&id, &ct, &back);
    assert_eq!(fs::read(&back).unwrap(), data);
    // stdin to stdout
    let out = encrypt_cmd(&["-r", &recipient, "--file", "-", "-o", "-"], &data);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let piped = dir.path.join("piped.age");
    fs::write(&piped, &out.stdout).unwrap();
    let back = dir.path.join("back3");
    age_decrypt(&id, &piped, &back);
    assert_eq!(fs::read(&back).unwrap(), data);
    // An existing output is never replaced.
    let out = encrypt_cmd(&["-r", &recipient, "--file", plain.to_str().unwrap()], b"");
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("exists"), "{}", out.stderr);
    assert!(temps(&dir.path).is_empty());
}

/// pgb seals the age payload itself (1 MiB blocks of 64 KiB chunks, the
/// last chunk flagged): sizes on every boundary of that layout, with two
/// recipients, must decrypt with the age CLI under either key.
#[test]
fn age_cli_decrypts_every_size_on_chunk_and_block_boundaries() {
    let dir = Scratch::new("boundaries");
    let (id1, r1) = age_key(&dir.path, "one.txt");
    let (id2, r2) = age_key(&dir.path, "two.txt");
    const K: usize = 64 * 1024;
    const M: usize = 1024 * 1024;
    for len in [0, 1, K - 1, K, K + 1, M - 1, M, M + 1, 2 * M, 2 * M + K] {
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let plain = dir.path.join(format!("p{len}"));
        fs::write(&plain, &data).unwrap();
        let out = encrypt_cmd(
            &["-r", &r1, "-r", &r2, "--file", plain.to_str().unwrap()],
            b"",
        );
        assert_eq!(out.code, 0, "{len} bytes: {}", out.stderr);
        let ct = dir.path.join(format!("p{len}.age"));
        // 16-byte tag per 64 KiB chunk, one (empty) chunk at least.
        let chunks = len.div_ceil(K).max(1);
        let header = fs::metadata(&ct).unwrap().len() as usize - len - 16 * chunks;
        assert!((150..400).contains(&header), "{len} bytes: header {header}");
        for (n, id) in [&id1, &id2].into_iter().enumerate() {
            let back = dir.path.join(format!("b{len}-{n}"));
            age_decrypt(id, &ct, &back);
            // age creates its -o file on the first byte out.
            let got = match fs::read(&back) {
                Err(e) if len == 0 && e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                r => r.unwrap(),
            };
            assert_eq!(got, data, "{len} bytes, key {n}");
        }
    }
}

#[test]
fn ssh_ed25519_keys_work_both_ways_with_age() {
    let dir = Scratch::new("ssh");
    let key = dir.path.join("id_ed25519");
    sh(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "pgb-test", "-f"])
        .arg(&key));
    let pubkey = dir.path.join("id_ed25519.pub");
    let data = b"an ssh-encrypted dump\n".repeat(10_000);
    let repo = Scratch::new("repo");
    let rec = fake_artifact(&repo.path, "s.dump", &data);

    // pgb-encrypt -R id_ed25519.pub, decrypted by age -d -i id_ed25519.
    let out = encrypt_cmd(&["-R", pubkey.to_str().unwrap()], &lines(&[rec]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let e = &out.recs[0];
    // The fingerprint is the one ssh-keygen -l prints.
    let l = String::from_utf8(sh(Command::new("ssh-keygen")
        .arg("-l")
        .arg("-f")
        .arg(&pubkey)))
    .unwrap();
    let fp = l.split_whitespace().nth(1).unwrap();
    assert_eq!(
        e["encryption"]["recipients"],
        json!([format!("ssh-ed25519 {fp}")])
    );
    let back = dir.path.join("back1");
    age_decrypt(&key, &location(e), &back);
    assert_eq!(fs::read(&back).unwrap(), data);

    // age -R id_ed25519.pub, decrypted by pgb-encrypt -d -i id_ed25519.
    let plain = dir.path.join("plain");
    fs::write(&plain, &data).unwrap();
    let ct = dir.path.join("plain.age");
    age_encrypt("-R", &pubkey, &plain, &ct);
    let back = dir.path.join("back2");
    let out = decrypt_file(&key, &ct, back.to_str().unwrap());
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(fs::read(&back).unwrap(), data);
}

#[test]
fn refusals_leave_nothing_behind() {
    let dir = Scratch::new("refuse");
    let (id, recipient) = age_key(&dir.path, "id.txt");
    let (other_id, _) = age_key(&dir.path, "other.txt");
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let plain = dir.path.join("p.bin");
    fs::write(&plain, &data).unwrap();
    let ct = dir.path.join("p.bin.age");
    age_encrypt("-r", &recipient, &plain, &ct);
    let ct_bytes = fs::read(&ct).unwrap();
    let truncated = dir.path.join("truncated.age");
    fs::write(&truncated, &ct_bytes[..ct_bytes.len() - 100]).unwrap();
    let altered = dir.path.join("altered.age");
    let mut alt = ct_bytes.clone();
    let at = alt.len() / 2;
    alt[at] ^= 0x20;
    fs::write(&altered, &alt).unwrap();
    let empty = dir.path.join("empty-recipients.txt");
    fs::write(&empty, "# nobody yet\n\n").unwrap();
    let loose = dir.path.join("loose.txt");
    fs::copy(&id, &loose).unwrap();
    fs::set_permissions(&loose, fs::Permissions::from_mode(0o640)).unwrap();
    let foreign = dir.path.join("foreign.txt");
    fs::copy(&id, &foreign).unwrap();
    fs::set_permissions(&foreign, fs::Permissions::from_mode(0o600)).unwrap();
    let foreign_owned = is_root();
    if foreign_owned {
        let pg = nix::unistd::User::from_name("postgres").unwrap().unwrap();
        nix::unistd::chown(&foreign, Some(pg.uid), None).unwrap();
    }

    let p = |x: &Path| x.to_str().unwrap().to_string();
    let out_path = dir.path.join("out");
    let o = p(&out_path);
    // (what, args, expected on stderr)
    let mut cases: Vec<(&str, Vec<String>, &str)> = vec![
        (
            "no recipients",
            vec!["--file".into(), p(&plain), "-o".into(), o.clone()],
            "no recipients",
        ),
        (
            "empty recipients file",
            vec![
                "-R".into(),
                p(&empty),
                "--file".into(),
                p(&plain),
                "-o".into(),
                o.clone(),
            ],
            "no recipients",
        ),
        (
            "identity readable by group",
            decrypt_args(&loose, &ct, &o),
            "0640",
        ),
        (
            "wrong identity",
            decrypt_args(&other_id, &ct, &o),
            "No matching keys",
        ),
        (
            "truncated ciphertext",
            decrypt_args(&id, &truncated, &o),
            "decryption failed",
        ),
        (
            "altered ciphertext",
            decrypt_args(&id, &altered, &o),
            "decryption failed",
        ),
    ];
    if foreign_owned {
        cases.push((
            "identity owned by another user",
            decrypt_args(&foreign, &ct, &o),
            "owned by uid",
        ));
    } else {
        eprintln!(
            "encrypt: not root, cannot chown an identity to another user; that case is skipped"
        );
    }
    for (what, args, said) in &cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = encrypt_cmd(&args, b"");
        assert_eq!(out.code, 2, "{what}: {}", out.stderr);
        assert!(
            out.stderr.starts_with("pgb-encrypt: "),
            "{what}: {}",
            out.stderr
        );
        assert!(out.stderr.contains(said), "{what}: {}", out.stderr);
        assert!(!out_path.exists(), "{what}: output published");
        assert!(
            temps(&dir.path).is_empty(),
            "{what}: temp left: {:?}",
            temps(&dir.path)
        );
        assert!(out.stdout.is_empty(), "{what}");
    }
    // The good identity decrypts the same file: the refusals were real.
    let out = encrypt_cmd(&["-d", "-i", &p(&id), "--file", &p(&ct), "-o", &o], b"");
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(fs::read(&out_path).unwrap(), data);
}

#[test]
fn damaged_ciphertext_in_a_repository_becomes_an_error_record() {
    let repo = Scratch::new("repo");
    let keys = Scratch::new("keys");
    let (id, recipient) = age_key(&keys.path, "id.txt");
    let (other, _) = age_key(&keys.path, "other.txt");
    let a = fake_artifact(&repo.path, "a.dump", &vec![1u8; 500_000]);
    let b = fake_artifact(&repo.path, "b.dump", &vec![2u8; 500_000]);
    let out = encrypt_cmd(&["-r", &recipient, "--remove-plaintext"], &lines(&[a, b]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    // Alter one byte of b's ciphertext.
    let b_ct = location(&out.recs[1]);
    let mut bytes = fs::read(&b_ct).unwrap();
    let at = bytes.len() - 1000;
    bytes[at] ^= 1;
    fs::write(&b_ct, &bytes).unwrap();

    // The wrong identity: both fail, nothing published.
    let dec = encrypt_cmd(&["-d", "-i", other.to_str().unwrap()], &out.stdout);
    assert_eq!(dec.code, 2);
    assert!(
        dec.recs.iter().all(|r| r["type"] == "error"),
        "{:?}",
        dec.recs
    );
    assert_eq!(dec.recs[0]["artifact"], out.recs[0]);
    // The right identity: a comes back, b is an error record.
    let dec = encrypt_cmd(
        &[
            "-d",
            "-i",
            id.to_str().unwrap(),
            "--repo",
            repo.path.to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!(dec.code, 2, "{}", dec.stderr);
    let kinds: Vec<&str> = dec
        .recs
        .iter()
        .map(|r| r["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["artifact", "error"]);
    assert!(dec.recs[0].get("encryption").is_none());
    assert!(location(&dec.recs[0]).exists());
    assert!(dec.recs[1]["message"]
        .as_str()
        .unwrap()
        .contains("b.dump.age"));
    assert!(!repo.path.join("main/logical/appdb/b.dump").exists());
    assert!(temps(&repo.path).is_empty());
}

#[test]
fn a_full_disk_publishes_nothing() {
    let dir = Scratch::new("full");
    let (identity, recipient) = age_key(&dir.path, "id.txt");
    let data = vec![5u8; 3 << 20];
    let plain = dir.path.join("big.bin");
    fs::write(&plain, &data).unwrap();
    // Ciphertext to a full stdout.
    let full = fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let st = Command::new(bin("pgb-encrypt"))
        .args(["-r", &recipient, "--file"])
        .arg(&plain)
        .args(["-o", "-"])
        .stdout(full)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(st.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&st.stderr).contains("No space left"));

    // A 1 MiB tmpfs as the destination.
    let mnt = dir.path.join("mnt");
    fs::create_dir(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&mnt)
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !mounted {
        eprintln!("encrypt: cannot mount a tmpfs here (not permitted); the tmpfs disk-full case is skipped");
        return;
    }
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(mnt.clone());
    let target = mnt.join("big.bin.age");
    let out = encrypt_cmd(
        &[
            "-r",
            &recipient,
            "--file",
            plain.to_str().unwrap(),
            "-o",
            target.to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("No space left on device"),
        "{}",
        out.stderr
    );
    assert!(!target.exists());
    assert!(
        fs::read_dir(&mnt).unwrap().next().is_none(),
        "temp left on the tmpfs"
    );

    // Decryption onto the full disk names the cause, not a thread.
    let cipher = dir.path.join("big.bin.age");
    let out = encrypt_cmd(&["-r", &recipient, "--file", plain.to_str().unwrap()], b"");
    assert_eq!(out.code, 0, "{}", out.stderr);
    let target = mnt.join("big.bin");
    let out = encrypt_cmd(
        &[
            "-d",
            "-i",
            identity.to_str().unwrap(),
            "--file",
            cipher.to_str().unwrap(),
            "-o",
            target.to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("No space left on device") && !out.stderr.contains("thread"),
        "{}",
        out.stderr
    );
    assert!(!target.exists());
    assert!(
        fs::read_dir(&mnt).unwrap().next().is_none(),
        "temp left on the tmpfs"
    );
}

#[test]
fn remove_plaintext_with_file_is_refused_not_ignored() {
    let dir = Scratch::new("rmfile");
    let (_, recipient) = age_key(&dir.path, "id.txt");
    let plain = dir.path.join("x.bin");
    fs::write(&plain, b"data").unwrap();
    let out = encrypt_cmd(
        &[
            "-r",
            &recipient,
            "--remove-plaintext",
            "--file",
            plain.to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("--remove-plaintext"), "{}", out.stderr);
    assert!(plain.exists() && !dir.path.join("x.bin.age").exists());
}

#[test]
fn bad_input_lines_are_named_and_fail_the_run() {
    let keys = Scratch::new("keys");
    let (_, recipient) = age_key(&keys.path, "id.txt");
    let note = r#"{"schema":"pgb.v1","type":"note","x":1}"#;
    let out = encrypt_cmd(&["-r", &recipient], format!("{note}\n{{oops\n").as_bytes());
    assert_eq!(out.code, 2);
    assert_eq!(out.stdout, format!("{note}\n").as_bytes());
    assert!(
        out.stderr.contains("stdin: line 2: malformed JSON"),
        "{}",
        out.stderr
    );
}

#[test]
fn plaintext_left_beside_ciphertext_goes_only_once_the_ciphertext_checks_out() {
    let repo = Scratch::new("repo");
    let keys = Scratch::new("keys");
    let (_, recipient) = age_key(&keys.path, "id.txt");
    let a = fake_artifact(&repo.path, "a.dump", &vec![3u8; 200_000]);
    let b = fake_artifact(&repo.path, "b.dump", &vec![4u8; 200_000]);
    let out = encrypt_cmd(&["-r", &recipient], &lines(&[a.clone(), b.clone()]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(location(&a).exists() && location(&b).exists());
    // b's ciphertext is damaged after it was recorded.
    let b_ct = location(&out.recs[1]);
    let mut bytes = fs::read(&b_ct).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    fs::write(&b_ct, &bytes).unwrap();

    let rm = encrypt_cmd(&["-r", &recipient, "--remove-plaintext"], &out.stdout);
    assert_eq!(rm.code, 2, "{}", rm.stderr);
    // a: forwarded as it was, its plaintext and plaintext sidecar gone.
    assert_eq!(rm.recs[0], out.recs[0]);
    assert!(!location(&a).exists());
    assert!(!Path::new(&format!("{}.pgb.json", location(&a).display())).exists());
    assert!(location(&out.recs[0]).exists());
    // b: its ciphertext no longer matches the record, so the plaintext stays.
    assert_eq!(rm.recs[1]["type"], "error");
    assert!(
        rm.recs[1]["message"]
            .as_str()
            .unwrap()
            .contains("does not match its record"),
        "{}",
        rm.recs[1]
    );
    assert!(location(&b).exists());
    assert!(Path::new(&format!("{}.pgb.json", location(&b).display())).exists());
}

/// A record older than its sidecar (from yesterday's log) is encrypted with
/// the copies and verifications its sidecar holds, and decrypting merges
/// into the plaintext's sidecar instead of replacing it.
#[test]
fn a_replayed_record_is_encrypted_with_the_evidence_of_its_sidecar() {
    let repo = Scratch::new("repo");
    let keys = Scratch::new("keys");
    let (id, recipient) = age_key(&keys.path, "id.txt");
    let old = fake_artifact(&repo.path, "replayed.dump", &vec![5u8; 100_000]);
    let side = format!("{}.pgb.json", location(&old).display());
    let mut since = old.clone();
    since["copies"] = json!([{"to": "/mnt/nas", "url": "/mnt/nas/x", "media": "nas",
                              "when": "2026-11-21T03:00:00Z"}]);
    since["verified"] = json!([{"method": "checksums", "ok": true,
                                "when": "2026-11-21T04:00:00Z"}]);
    fs::write(&side, serde_json::to_vec_pretty(&since).unwrap()).unwrap();

    let enc = encrypt_cmd(&["-r", &recipient], &lines(std::slice::from_ref(&old)));
    assert_eq!(enc.code, 0, "{}", enc.stderr);
    let e = &enc.recs[0];
    assert_eq!(e["copies"], since["copies"], "{e}");
    assert_eq!(e["verified"], since["verified"], "{e}");
    let on_disk: Value =
        serde_json::from_slice(&fs::read(format!("{}.pgb.json", location(e).display())).unwrap())
            .unwrap();
    assert_eq!(&on_disk, e);

    // Decrypted beside the kept plaintext: its sidecar gains, loses nothing.
    let mut plain_side = since.clone();
    plain_side["verified"]
        .as_array_mut()
        .unwrap()
        .push(json!({"method": "restore", "ok": true, "when": "2026-11-21T05:00:00Z"}));
    fs::write(&side, serde_json::to_vec_pretty(&plain_side).unwrap()).unwrap();
    let mut ciphertext = e.clone();
    ciphertext["verified"] = json!([]);
    let dec = encrypt_cmd(
        &["-d", "-i", id.to_str().unwrap()],
        &lines(std::slice::from_ref(&ciphertext)),
    );
    assert_eq!(dec.code, 0, "{}", dec.stderr);
    let back: Value = serde_json::from_slice(&fs::read(&side).unwrap()).unwrap();
    assert_eq!(back["verified"], plain_side["verified"], "{back}");
    assert_eq!(back["copies"], since["copies"], "{back}");
    assert_eq!(&back, &dec.recs[0]);
}
