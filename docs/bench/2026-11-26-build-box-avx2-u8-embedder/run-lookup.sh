#!/bin/sh
# Alternating runs: default config (u8 int8 model) and the float32 model, 5 rounds each.
cd /work/main
for i in 1 2; do
  echo "=== run $i: configs/default.toml (int8, u8 weights) $(date -u +%T) load: $(cut -d' ' -f1-3 /proc/loadavg)"
  cargo bench -q -p cachet-gateway --bench lookup 2>&1 | grep -v 'INFO'
  echo "=== run $i: float32 (configs/default.toml with model = assets/minilm-f32/model.onnx) $(date -u +%T) load: $(cut -d' ' -f1-3 /proc/loadavg)"
  cargo bench -q -p cachet-gateway --bench lookup -- --config /tmp/f32.toml 2>&1 | grep -v 'INFO'
done
echo rc=done
