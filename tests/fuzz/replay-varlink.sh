#!/bin/sh
# Description: every input of the fuzz-varlink corpus (tests/fuzz/corpus/varlink) runs through
# the harness again, built with the normal compiler (with ASan and UBSan in a
# --enable-sanitizers build): seeds and past crashes stay fixed.
exec "${BLKLEDGER_TOP_BUILDDIR:-.}/tests/fuzz/replay-varlink" "${BLKLEDGER_TOP_SRCDIR:-.}/tests/fuzz/corpus/varlink"
