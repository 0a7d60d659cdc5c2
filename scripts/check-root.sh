#!/usr/bin/env bash
# Fails when a file tracked at the repository root is not one a Rust project keeps there: a
# stray dump (a file called `0` once sat here unnoticed) is caught before it lands.
set -euo pipefail
cd "$(dirname "$0")/.."
allowed='^(Cargo\.(toml|lock)|README\.md|LICENSE.*|\.gitignore|\.dockerignore|\.gitattributes|rust-toolchain(\.toml)?|rustfmt\.toml|clippy\.toml|deny\.toml|CHANGELOG\.md|CONTRIBUTING\.md|SECURITY\.md)$'
odd=$(git ls-files | grep -v / | grep -vE "$allowed" || true)
if [ -n "$odd" ]; then
  echo "error: unexpected files at the repository root (move or remove them, or add them to scripts/check-root.sh): $odd" >&2
  exit 1
fi
