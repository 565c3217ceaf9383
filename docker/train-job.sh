#!/bin/sh
# The `trainer` job of docker-compose.yml: synthesize click/conversion logs once, then train and
# export every architecture in $ARCHITECTURES that has no export yet (RETRAIN=1 trains a new
# version of each). Each step is a plain `mtrank` command, as a user would type it.
set -eu

data=${DATA_DIR:-/data}
models=${MODELS_DIR:-/models}
architectures=${ARCHITECTURES:-mmoe ple}

has_logs=1
for file in schema.yaml train.parquet val.parquet test.parquet users.parquet items.parquet; do
  [ -f "$data/$file" ] || has_logs=0
done
if [ "$has_logs" = 1 ]; then
  echo "trainer: $data already holds the logs; skipping synth" >&2
else
  mtrank synth --out "$data" --rows "${ROWS:-200000}" --users "${USERS:-10000}" \
    --items "${ITEMS:-2000}" --seed "${SEED:-0}"
fi

for name in $architectures; do
  if [ "${RETRAIN:-0}" != 1 ] && ls "$models/$name"/[0-9]*/saved_model.pb >/dev/null 2>&1; then
    echo "trainer: $models/$name is exported; skipping (RETRAIN=1 trains a new version)" >&2
    continue
  fi
  set -- --data "$data" --model "$name" --out "$models"
  if [ -n "${EPOCHS:-}" ]; then
    set -- "$@" --epochs "$EPOCHS"
  fi
  if [ -n "${CONFIG_DIR:-}" ] && [ -f "$CONFIG_DIR/$name.yaml" ]; then
    set -- "$@" --config "$CONFIG_DIR/$name.yaml"
  fi
  mtrank train "$@"
done
