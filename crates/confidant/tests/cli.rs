//! The command line, as an operator meets it.

mod common;

use std::process::Command;

fn confidant() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_confidant"));
    c.env_remove("CONFIDANT_CONFIG").env("CONFIDANT_LOG", "warn");
    c
}

#[test]
fn invalid_configuration_reports_every_problem_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "colour = \"blue\"\n[server]\nlisten = \"nowhere\"\n[[sources]]\nname = \"web\"\nwrite_key = \"short\"\n[[api_keys]]\nname = \"x\"\nkey = \"ak_0123456789abcdef\"\nrole = \"root\"\n",
    )
    .unwrap();
    let out = confidant().args(["serve", "--config"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for path in ["colour: unknown key", "server.listen:", "sources[0].write_key:", "api_keys[0].role:"] {
        assert!(err.contains(path), "{path} missing from:\n{err}");
    }
    assert!(!err.contains("ak_0123456789abcdef"), "keys are never echoed");

    let out = confidant().args(["serve", "--config"]).arg(dir.path().join("missing.toml")).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read the configuration file"));

    let out = confidant().args(["serve", "--listen", "not-an-address", "--data-dir"]).arg(dir.path()).current_dir(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("server.listen"));
}

#[test]
fn first_start_creates_private_keys_and_prints_them_once() {
    let dir = tempfile::tempdir().unwrap();
    let start = || {
        let mut child = confidant()
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("data"))
            .current_dir(dir.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let creds = dir.path().join("data/credentials.toml");
        for _ in 0..300 {
            if creds.exists() && dir.path().join("data/confidant.db").exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
        child.kill().unwrap();
        let out = child.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let first = start();
    let creds = std::fs::read_to_string(dir.path().join("data/credentials.toml")).unwrap();
    let keys: Vec<&str> = creds.lines().filter_map(|l| l.split('"').nth(1)).collect();
    assert_eq!(keys.len(), 2, "{creds}");
    for k in &keys {
        assert!(first.contains(k), "the key is printed on first start:\n{first}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("data/credentials.toml")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let second = start();
    for k in &keys {
        assert!(!second.contains(k), "keys are printed only once");
    }
    assert_eq!(std::fs::read_to_string(dir.path().join("data/credentials.toml")).unwrap(), creds, "the same keys are kept");
}

#[test]
fn every_command_has_help() {
    for cmd in [vec!["--help"], vec!["serve", "--help"], vec!["demo", "--help"]] {
        let out = confidant().args(&cmd).output().unwrap();
        assert!(out.status.success(), "{cmd:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("Usage"), "{cmd:?}");
    }
    let out = confidant().arg("no-such-command").output().unwrap();
    assert!(!out.status.success());
}

#[test]
fn the_demo_loads_a_shop_with_merged_profiles() {
    let dir = tempfile::tempdir().unwrap();
    let run = || {
        confidant()
            .args(["demo", "--no-serve", "--customers", "60", "--visitors", "30", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("demo"))
            .output()
            .unwrap()
    };
    let out = run();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("/v1/batch") && stdout.contains("Bearer ak_"), "{stdout}");
    let err = String::from_utf8_lossy(&out.stderr);
    let stored = |s: &str| -> (u64, u64, u64) {
        let line = s.lines().find(|l| l.starts_with("Sent ")).unwrap_or_else(|| panic!("{s}"));
        let n = |after: &str| line.split(after).next().unwrap().split_whitespace().last().unwrap().parse::<u64>().unwrap();
        (n(" events stored"), n(" profiles"), n(" merges,"))
    };
    let (events, profiles, merges) = stored(&err);
    assert!(events > 1000, "{err}");
    assert!((90..150).contains(&profiles), "{err}");
    assert!(merges > 20, "{err}");
    // Same seed again: every message is a duplicate, nothing is added.
    let again = run();
    assert!(again.status.success());
    assert_eq!(stored(&String::from_utf8_lossy(&again.stderr)), (events, profiles, merges));
}
