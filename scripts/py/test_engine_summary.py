"""Unit tests of scripts/gpu/engine_summary.py: the verdicts of the CUDA backend's goals.

Run with: assets/venv/bin/python -m unittest discover -s scripts/py -p 'test_*.py'
"""

import json
import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "gpu"))
import engine_summary  # noqa: E402


def parity_row(ours, theirs):
    return {"rel_l2_vs_fp32": ours, "transformers_bf16_rel_l2_vs_fp32": theirs}


def prefix_entry(ttft_ratio, throughput_ratio):
    side = {"ttft_ms_p50": 10.0, "output_tokens_per_s": 1000.0}
    return {"on": side, "off": side, "median_ttft_ratio_off_over_on": ttft_ratio,
            "throughput_ratio_on_over_off": throughput_ratio}


class SummaryTest(unittest.TestCase):
    def write(self, folder, name, value):
        with open(os.path.join(folder, name), "w") as f:
            json.dump(value, f)

    def test_each_goal_is_judged_against_its_threshold(self):
        parity = {"gpu": "H100", "date": "2026-11-26", "shapes": {
            "close": {"vs_transformers": [parity_row(0.0250, 0.0245)],
                      "mbu_vs_vendor_peak": 0.81, "mbu": 0.9,
                      "decode_batch1_tokens_per_s": 170.0},
            "far": {"vs_transformers": [parity_row(0.0300, 0.0250)],
                    "mbu_vs_vendor_peak": 0.79, "mbu": 0.88,
                    "decode_batch1_tokens_per_s": 160.0},
            "broken": {"error": "RuntimeError('probe')"}}}
        cascade = {"prompts": 160, "prefix_tokens": 128,
                   "vs_shared_blocks_no_cascade": {"same_32": 159, "first_divergences": [30]},
                   "vs_own_blocks": {"same_32": 158, "first_divergences": [12, 30]}}
        load = {"trained": {"cuda_vs_cpu_greedy": [{"same_32": True}, {"same_32": False}],
                            "cascade": cascade},
                "prefix": {"m": {"clients_256": dict(prefix_entry(120.0, 3.1), on_no_cascade={
                                     "ttft_ms_p50": 10.0, "output_tokens_per_s": 2500.0}),
                                 "clients_64": prefix_entry(120.0, 2.9)}}}
        with tempfile.TemporaryDirectory() as folder:
            self.write(folder, "parity.json", parity)
            self.write(folder, "load.json", load)
            text = engine_summary.summary(folder)
        lines = text.splitlines()

        def row(start):
            return next(line for line in lines if line.startswith(start))

        # Within 10% of transformers bf16's own distance passes; 20% over does not.
        self.assertTrue(row("| close | 0.0250").endswith("| met |"))
        self.assertTrue(row("| far | 0.0300").endswith("**not met** |"))
        self.assertIn("**not met**", row("| broken |"))
        self.assertTrue(row("| close | 170.0").endswith("| met |"))
        self.assertTrue(row("| far | 160.0").endswith("**not met** |"))
        self.assertIn("1 of 2 prompts identical (**not met**)", text)
        self.assertIn("- vs same shared blocks, cascade off: 159 of 160", text)
        self.assertIn("- vs every prompt its own blocks: 158 of 160", text)
        self.assertTrue(row("| m | 256 |").endswith("| met |"))
        self.assertIn("cascade attention off: 2500 tok/s, 2.50x", text)
        self.assertTrue(row("| m | 64 |").endswith("**not met** |"))
        self.assertIn("Throughput", text)
        self.assertIn("did not run", text)

    def test_a_run_that_wrote_nothing_says_so(self):
        with tempfile.TemporaryDirectory() as folder:
            text = engine_summary.summary(folder)
        self.assertIn("parity.json missing", text)
        self.assertIn("load.json missing", text)


if __name__ == "__main__":
    unittest.main()
