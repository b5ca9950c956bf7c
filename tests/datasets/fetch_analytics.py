#!/usr/bin/env python3
"""Writes the analytics test sets into a directory (default ./datasets), from wheels on the
package index that ship them, so that the tests need no other download:
  cdnow_sample.csv  customer_id,date,cds,dollars  (lifetimes 0.11.3: CDNOW_sample.txt, the data
                    of Fader, Hardie and Lee 2005; dates written as YYYY-MM-DD)
  ml100k.csv        user_id,item_id,rating,timestamp  (recbole 1.2.1: MovieLens-100k)
Present files are kept."""
import csv, glob, os, subprocess, sys, tempfile, zipfile

out = sys.argv[1] if len(sys.argv) > 1 else "datasets"
os.makedirs(out, exist_ok=True)

def open_wheel(spec, tmp):
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "-d", tmp, spec], check=True)
    prefix = spec.split("==")[0]
    return zipfile.ZipFile(next(p for p in glob.glob(os.path.join(tmp, "*.whl")) if os.path.basename(p).lower().startswith(prefix.lower())))

def write(name, header, rows):
    with open(os.path.join(out, name), "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)

with tempfile.TemporaryDirectory() as tmp:
    if not os.path.exists(os.path.join(out, "cdnow_sample.csv")):
        text = open_wheel("lifetimes==0.11.3", tmp).read("lifetimes/datasets/CDNOW_sample.txt").decode("ascii")
        rows = []
        for fields in (line.split() for line in text.splitlines()):
            if len(fields) >= 4 and fields[0].isdigit():
                customer, day, cds, dollars = fields[-4:]  # the sample's lines start with a master id
                rows.append([customer, f"{day[:4]}-{day[4:6]}-{day[6:8]}", cds, dollars])
        write("cdnow_sample.csv", ["customer_id", "date", "cds", "dollars"], rows)
    if not os.path.exists(os.path.join(out, "ml100k.csv")):
        text = open_wheel("recbole==1.2.1", tmp).read("recbole/dataset_example/ml-100k/ml-100k.inter").decode("utf-8")
        rows = []
        for line in text.splitlines()[1:]:
            user, item, rating, ts = line.split("\t")
            rows.append([user, item, rating.split(".")[0], ts.split(".")[0]])
        write("ml100k.csv", ["user_id", "item_id", "rating", "timestamp"], rows)
