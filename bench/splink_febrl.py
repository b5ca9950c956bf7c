#!/usr/bin/env python3
"""The reference for `bench/dedupe.sh`: Splink (Fellegi-Sunter on DuckDB) deduplicating a FEBRL
file the way its documentation's FEBRL example does, with no labels: prior from a
deterministic rule, u by random sampling, m by EM on two blocking sessions, prediction over
ORed blocking rules, clustering at the threshold. Prints one JSON line: wall time of the whole
process (imports included) and pair precision, recall, F1 of pairs in the same cluster.

usage: bench/splink_febrl.py FILE TRUE_PAIRS.csv [THRESHOLD]
"""
import json
import sys
import time

started = time.time()
import logging  # noqa: E402

import pandas as pd  # noqa: E402
import splink.comparison_library as cl  # noqa: E402
from splink import DuckDBAPI, Linker, SettingsCreator, block_on  # noqa: E402

path, truth_path = sys.argv[1], sys.argv[2]
threshold = float(sys.argv[3]) if len(sys.argv) > 3 else 0.9
df = pd.read_csv(path, dtype=str, keep_default_na=False).drop(columns=["true_cluster"])
df = df.replace("", None)
db_api = DuckDBAPI()
settings = SettingsCreator(
    link_type="dedupe_only",
    unique_id_column_name="rec_id",
    blocking_rules_to_generate_predictions=[
        block_on("soc_sec_id"),
        block_on("given_name", "surname"),
        block_on("date_of_birth"),
        block_on("postcode", "street_number"),
        block_on("surname", "substr(given_name, 1, 1)"),
    ],
    comparisons=[
        cl.NameComparison("given_name"),
        cl.NameComparison("surname"),
        cl.DateOfBirthComparison("date_of_birth", input_is_string=True, datetime_format="%Y%m%d"),
        cl.DamerauLevenshteinAtThresholds("soc_sec_id", [1, 2]),
        cl.DamerauLevenshteinAtThresholds("street_number", [1]),
        cl.JaroWinklerAtThresholds("address_1", [0.9, 0.7]),
        cl.JaroWinklerAtThresholds("address_2", [0.9, 0.7]),
        cl.JaroWinklerAtThresholds("suburb", [0.9, 0.7]),
        cl.DamerauLevenshteinAtThresholds("postcode", [1, 2]),
        cl.ExactMatch("state"),
    ],
    retain_intermediate_calculation_columns=False,
)
logging.getLogger("splink").setLevel(logging.ERROR)
linker = Linker(db_api.register(df), settings, log_level=logging.ERROR)
linker.training.estimate_probability_two_random_records_match([block_on("soc_sec_id", "date_of_birth")], recall=0.6)
linker.training.estimate_u_using_random_sampling(max_pairs=1e6)
linker.training.estimate_parameters_using_expectation_maximisation(block_on("date_of_birth"))
linker.training.estimate_parameters_using_expectation_maximisation(block_on("given_name", "surname"))
pred = linker.inference.predict(threshold_match_probability=threshold)
clusters = linker.clustering.cluster_pairwise_predictions_at_threshold(pred, threshold).as_pandas_dataframe()
members = clusters.groupby("cluster_id")["rec_id"].apply(sorted)
found = {(a, b) for ids in members for i, a in enumerate(ids) for b in ids[i + 1:]}
truth = {tuple(sorted(p)) for p in pd.read_csv(truth_path, dtype=str).itertuples(index=False)}
tp = len(found & truth)
precision = tp / len(found) if found else 1.0
recall = tp / len(truth) if truth else 1.0
f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
print(json.dumps({"tool": "splink", "file": path, "seconds": round(time.time() - started, 3), "pairs": len(found),
                  "precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4)}))
