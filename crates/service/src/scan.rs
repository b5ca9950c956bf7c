//! The erasure proof: scans every byte of every file under a directory for texts, in UTF-8 and
//! UTF-16 (both byte orders), as given, lower-cased and JSON-escaped. Works on raw files, so it
//! sees what SQL cannot: free pages, the WAL, indexes, anything else lying in the directory.

use std::io::Read;
use std::path::{Path, PathBuf};

use aho_corasick::AhoCorasick;

/// One occurrence found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hit {
    pub file: PathBuf,
    pub offset: u64,
    /// Which of the texts (index into the caller's list), never the text itself.
    pub needle: usize,
    pub variant: &'static str,
}

/// What a scan looked at.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScanReport {
    pub files: u64,
    pub bytes: u64,
    pub hits: Vec<Hit>,
}

fn json_escaped(s: &str, ascii_only: bool) -> String {
    let mut out = String::new();
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '/' if ascii_only => out.push_str("\\/"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c if ascii_only && !c.is_ascii() => {
                let mut buf = [0u16; 2];
                for u in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{u:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// The byte patterns of one text.
fn variants(text: &str) -> Vec<(&'static str, Vec<u8>)> {
    let mut v: Vec<(&'static str, Vec<u8>)> = Vec::new();
    let lower = text.to_lowercase();
    for (name, s) in [("utf8", text.to_owned()), ("utf8-lower", lower.clone()), ("json", json_escaped(text, false)), ("json-ascii", json_escaped(text, true)), ("json-ascii-lower", json_escaped(&lower, true))] {
        v.push((name, s.into_bytes()));
    }
    for (name, s) in [("utf16le", text), ("utf16le-lower", lower.as_str())] {
        v.push((name, s.encode_utf16().flat_map(u16::to_le_bytes).collect()));
    }
    for (name, s) in [("utf16be", text), ("utf16be-lower", lower.as_str())] {
        v.push((name, s.encode_utf16().flat_map(u16::to_be_bytes).collect()));
    }
    let mut seen = std::collections::HashSet::new();
    v.retain(|(_, b)| !b.is_empty() && seen.insert(b.clone()));
    v
}

/// Scans every regular file under `dir` (recursively) for every text.
pub fn scan(dir: &Path, texts: &[String]) -> std::io::Result<ScanReport> {
    let mut patterns = Vec::new();
    let mut meta = Vec::new();
    for (i, t) in texts.iter().enumerate() {
        for (variant, bytes) in variants(t) {
            patterns.push(bytes);
            meta.push((i, variant));
        }
    }
    let mut report = ScanReport::default();
    if patterns.is_empty() {
        return Ok(report);
    }
    let ac = AhoCorasick::new(&patterns).map_err(std::io::Error::other)?;
    let overlap = patterns.iter().map(Vec::len).max().unwrap_or(1) - 1;
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&d)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.path());
        for e in entries {
            let ft = e.file_type()?;
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                report.files += 1;
                scan_file(&e.path(), &ac, &meta, overlap, &mut report)?;
            }
        }
    }
    Ok(report)
}

fn scan_file(path: &Path, ac: &AhoCorasick, meta: &[(usize, &'static str)], overlap: usize, report: &mut ScanReport) -> std::io::Result<()> {
    let mut f = std::fs::File::open(path)?;
    const CHUNK: usize = 8 << 20;
    let mut buf = vec![0u8; CHUNK + overlap];
    let mut carried = 0usize; // bytes kept from the previous chunk at the start of buf
    let mut base: u64 = 0; // file offset of buf[0]
    loop {
        let mut filled = carried;
        while filled < buf.len() {
            let n = f.read(&mut buf[filled..])?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        if filled == carried {
            break;
        }
        report.bytes += (filled - carried) as u64;
        for m in ac.find_overlapping_iter(&buf[..filled]) {
            // Matches lying wholly in the carried part were reported with the previous chunk.
            if m.end() <= carried {
                continue;
            }
            let (needle, variant) = meta[m.pattern().as_usize()];
            report.hits.push(Hit { file: path.to_owned(), offset: base + m.start() as u64, needle, variant });
        }
        if filled < buf.len() {
            break;
        }
        let keep = overlap.min(filled);
        buf.copy_within(filled - keep..filled, 0);
        base += (filled - keep) as u64;
        carried = keep;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_encoding_and_across_chunk_boundaries() {
        let dir = tempfile::tempdir().unwrap();
        let text = "Zoé@Example.fr";
        let mut data = vec![0u8; (8 << 20) - 5];
        data.extend_from_slice(text.as_bytes()); // straddles the first chunk boundary
        data.extend(text.to_lowercase().encode_utf16().flat_map(u16::to_le_bytes));
        data.extend_from_slice(b"\"Zo\\u00e9@Example.fr\"");
        std::fs::write(dir.path().join("a.bin"), &data).unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/b.txt"), "nothing here").unwrap();
        let r = scan(dir.path(), &[text.to_owned()]).unwrap();
        assert_eq!(r.files, 2);
        let variants: Vec<&str> = r.hits.iter().map(|h| h.variant).collect();
        assert!(variants.contains(&"utf8"), "{variants:?}");
        assert!(variants.contains(&"utf16le-lower"), "{variants:?}");
        assert!(variants.contains(&"json-ascii"), "{variants:?}");
        assert_eq!(r.hits.iter().find(|h| h.variant == "utf8").unwrap().offset, (8 << 20) - 5);
        assert!(scan(dir.path(), &["absent".to_owned()]).unwrap().hits.is_empty());
    }
}
