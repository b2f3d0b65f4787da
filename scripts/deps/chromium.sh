#!/usr/bin/env bash
# `giantvm ab` report tests: Chromium renders DIR/report.html headless (screenshot + DOM dump) to
# check the inline SVG charts are there (Tests/ABTests/HTMLRenderTests.swift).
set -euo pipefail
if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core
fi
