"""This project's Dagster runs seen from outside the definitions: which run worker processes Dagster named and
whether they live (`workers`), the runs whose worker died and how they are released (`dead`), and what a run's
tags say (`tags`). Plain, typed functions on a `DagsterInstance`: no asset, job or sensor is defined here, so
they are tested on a real instance without Dagster's decorators, and `usage_pipeline.defs.dead_runs` (the
sensor) and `usage-pipeline release-dead-runs` share them."""
