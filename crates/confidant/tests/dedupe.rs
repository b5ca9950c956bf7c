//! `confidant dedupe` against the real binary: FEBRL 1 and 2 (fetched into `datasets/` by
//! `tests/datasets/fetch_febrl.py`, which `.ci/run` runs), linking two files, and bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn datasets() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets");
    assert!(
        dir.join("febrl2_true_pairs.csv").exists(),
        "the FEBRL data sets are missing: python3 tests/datasets/fetch_febrl.py datasets (.ci/run does this)"
    );
    dir
}

fn dedupe(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_confidant")).arg("dedupe").args(args).env("CONFIDANT_LOG", "warn").output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn f1(o: &Output) -> f64 {
    let t = text(o);
    let line = t.lines().find(|l| l.starts_with("precision")).unwrap_or_else(|| panic!("no evaluation in:\n{t}"));
    line.rsplit("F1 ").next().unwrap().split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn febrl_1_and_2_are_deduplicated_with_an_f1_of_at_least_0_998() {
    let d = datasets();
    let out_dir = tempfile::tempdir().unwrap();
    for set in ["febrl1", "febrl2"] {
        let pairs = out_dir.path().join(format!("{set}.csv"));
        let o = dedupe(&[
            d.join(format!("{set}.csv")).to_str().unwrap(),
            "--id",
            "rec_id",
            "--ignore",
            "true_cluster",
            "--pairs-out",
            pairs.to_str().unwrap(),
            "--truth",
            d.join(format!("{set}_true_pairs.csv")).to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", text(&o));
        assert!(f1(&o) >= 0.998, "{set}: {}", text(&o));
        let written = std::fs::read_to_string(&pairs).unwrap();
        assert!(written.starts_with("id_l,id_r,match_probability\n"));
        let first = written.lines().nth(1).unwrap();
        let p: f64 = first.rsplit(',').next().unwrap().parse().unwrap();
        assert!((0.0..=1.0).contains(&p), "{first}");
    }
    // --explain: the weight of each comparison, summing to the match weight.
    let o = dedupe(&[
        d.join("febrl1.csv").to_str().unwrap(),
        "--id",
        "rec_id",
        "--ignore",
        "true_cluster",
        "--pairs-out",
        out_dir.path().join("x.csv").to_str().unwrap(),
        "--explain",
        "rec-0-dup-0",
        "rec-0-org",
    ]);
    let t = text(&o);
    assert!(t.contains("soc_sec_id") && t.contains("given_name") && t.contains("match weight"), "{t}");
}

#[test]
fn two_files_are_linked_with_cross_file_pairs_only() {
    let d = datasets();
    let dir = tempfile::tempdir().unwrap();
    let all = std::fs::read_to_string(d.join("febrl1.csv")).unwrap();
    let mut lines = all.lines();
    let header = lines.next().unwrap();
    let (mut left, mut right) = (vec![header.to_owned()], vec![header.to_owned()]);
    for l in lines {
        if l.contains("-org,") { left.push(l.to_owned()) } else { right.push(l.to_owned()) }
    }
    std::fs::write(dir.path().join("a.csv"), left.join("\n")).unwrap();
    std::fs::write(dir.path().join("b.csv"), right.join("\n")).unwrap();
    let pairs = dir.path().join("pairs.csv");
    let o = dedupe(&[
        dir.path().join("a.csv").to_str().unwrap(),
        dir.path().join("b.csv").to_str().unwrap(),
        "--id",
        "rec_id",
        "--ignore",
        "true_cluster",
        "--pairs-out",
        pairs.to_str().unwrap(),
        "--truth",
        d.join("febrl1_true_pairs.csv").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(f1(&o) >= 0.998, "{}", text(&o));
    let written = std::fs::read_to_string(&pairs).unwrap();
    for row in written.lines().skip(1) {
        let (l, r) = row.split_once(',').unwrap();
        assert_ne!(l.contains("-org"), r.split(',').next().unwrap().contains("-org"), "a pair within one file: {row}");
    }
}

#[test]
fn bad_input_gets_a_specific_message_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    std::fs::write(dir.path().join("ok.csv"), "id,given_name,surname\n1,ann,lee\n2,anne,lee\n").unwrap();
    std::fs::write(dir.path().join("wide.csv"), "id,given_name,surname\n1,ann,lee\n2,anne,lee,extra\n").unwrap();
    std::fs::write(dir.path().join("latin1.csv"), b"id,given_name,surname\n1,ren\xe9,lee\n".as_slice()).unwrap();
    std::fs::write(dir.path().join("truth.csv"), "id_l,id_r\n1,99\n").unwrap();
    let out = p("out.csv");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec![p("missing.csv"), "--id".into(), "id".into()], "cannot open"),
        (vec![p("ok.csv"), "--id".into(), "rec_id".into()], "line 1: the header has no column \"rec_id\""),
        (vec![p("wide.csv"), "--id".into(), "id".into()], "line 3: 4 fields, but the header has 3"),
        (vec![p("latin1.csv"), "--id".into(), "id".into()], "line 2: not valid UTF-8"),
        (vec![p("ok.csv"), "--id".into(), "id".into(), "--column".into(), "surname=shoe_size".into()], "unknown role \"shoe_size\""),
        (vec![p("ok.csv"), "--id".into(), "id".into(), "--truth".into(), p("truth.csv")], "line 2: the truth file does not match the input: no record has the id \"99\""),
    ];
    for (mut args, expected) in cases {
        args.extend(["--pairs-out".into(), out.clone()]);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = dedupe(&refs);
        assert!(!o.status.success(), "{args:?} should fail");
        assert!(text(&o).contains(expected), "{args:?}: expected {expected:?} in:\n{}", text(&o));
        assert!(!Path::new(&out).exists(), "{args:?}: nothing may be written");
    }
}
