"""The training-data generator: deterministic, and its seeds valid."""

import json
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parent


def generate(out: Path, seed: int) -> None:
    subprocess.run([sys.executable, str(HERE / "generate.py"), "--out", str(out), "--seed", str(seed)],
                   check=True, capture_output=True)


class GeneratorTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        root = Path(cls.tmp.name)
        cls.a, cls.b, cls.c = root / "a", root / "b", root / "c"
        generate(cls.a, 7)
        generate(cls.b, 7)
        generate(cls.c, 8)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_the_same_seed_writes_the_same_bytes(self):
        for name in ("pairs.jsonl", "conversations.jsonl"):
            self.assertEqual((self.a / name).read_bytes(), (self.b / name).read_bytes(), name)

    def test_another_seed_writes_other_rows(self):
        self.assertNotEqual((self.a / "pairs.jsonl").read_bytes(), (self.c / "pairs.jsonl").read_bytes())

    def test_labels_follow_the_operators_and_splits_follow_the_seeds(self):
        positives = {"near_repeat", "paraphrase", "same_context_reworded", "irrelevant_history",
                     "same_context_extra_chatter"}
        split_of = {}
        for name in ("pairs.jsonl", "conversations.jsonl"):
            for line in (self.a / name).read_text().splitlines():
                row = json.loads(line)
                group = row.get("group") or row["subtype"]
                self.assertEqual(row["same_answer"], group in positives, row)
                self.assertNotEqual(row["a"], row["b"], row)
                # Every row of a seed is in one split: validation seeds are never trained on.
                self.assertEqual(split_of.setdefault(row["seed"], row["split"]), row["split"])
        self.assertEqual(set(split_of.values()), {"train", "val", "test"})

    def test_every_seed_file_is_valid(self):
        files = sorted(str(p) for p in (HERE / "seeds").glob("*.jsonl"))
        result = subprocess.run([sys.executable, str(HERE / "check_seeds.py"), *files],
                                capture_output=True, text=True)
        self.assertEqual(result.returncode, 0, result.stdout)


if __name__ == "__main__":
    unittest.main()
