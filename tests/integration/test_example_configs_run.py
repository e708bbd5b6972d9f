"""Upstream's examples run, not just validate: each corpus config that needs no facility runs to
completion with ``lclstreamer -c FILE``, and what arrives is counted exactly.

Only ``source_identifier`` changes for a psana2 example: the example's own ``exp``/``run`` with
``dir=`` added, where xtcwriter data was written under the detector and EPICS names the example
asks for (``tests/psana_names.py``). Network handlers point at our receivers on 127.0.0.1; file
handlers write under the run's working directory (a temporary one). The expected event count
comes from psana itself, reading the same data. Which configs need the facility, and why, is
``example_configs.EXAMPLES``; every corpus file must be in it.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import pytest
import yaml

from airflow_provider_lclstream.config.loader import parse_streamer_config
from airflow_provider_lclstream.config.streamer import (
    BatchProcessingPipeline,
    BinaryDataStreamingDataHandler,
    BinaryFileWritingDataHandler,
    HDF5BinarySerializer,
    Psana2DetectorInterface,
    StreamerConfig,
)
from airflow_provider_lclstream.config.streamer_components import (
    InternalEventSource,
    Psana2EventSource,
)
from airflow_provider_lclstream.consumer.receiver import receive_messages
from airflow_provider_lclstream.streamer.sources.psana2 import parse_source_identifier
from tests.conftest import REPO, service_unavailable, venv_bin
from tests.integration.example_configs import EXAMPLES, NeedsFacility, Runs
from tests.integration.streaming import BIN, BackgroundReceiver, free_port, total_line
from tests.psana_names import CSPAD, HSD, PVS, write_named_run
from tests.unit.config._corpus import labelled_files


def marks(path: Path, spec: Runs) -> list[pytest.MarkDecorator]:
    """``psana`` for a psana2 example, ``mpi`` for one on several ranks."""
    psana2 = isinstance(parse_streamer_config(path.read_text()).event_source, Psana2EventSource)
    return [m for m, on in ((pytest.mark.psana, psana2), (pytest.mark.mpi, spec.ranks > 1)) if on]


LABELLED = labelled_files()
RUNNABLE = [
    pytest.param(path, spec, id=label, marks=marks(path, spec))
    for label, path in LABELLED
    if isinstance(spec := EXAMPLES.get(label), Runs)
]
DOC = REPO / "docs" / "streamer-config.md"


def test_every_corpus_file_is_classified() -> None:
    labels = {label for label, _ in LABELLED}
    unclassified = sorted(labels - set(EXAMPLES))
    assert not unclassified, (
        f"classify these in tests/integration/example_configs.py: {unclassified}"
    )
    stale = sorted(k for k in EXAMPLES if k not in labels and not k.startswith("upstream/"))
    if any(label.startswith("upstream/") for label in labels):
        stale += sorted(k for k in EXAMPLES if k not in labels and k.startswith("upstream/"))
    assert not stale, f"no such corpus file: {stale}"
    assert all(e.reason for e in EXAMPLES.values() if isinstance(e, NeedsFacility))


def test_the_docs_show_the_classification() -> None:
    section = DOC.read_text().split("## Upstream examples that run here", 1)[1].split("\n## ")[0]
    for label, example in EXAMPLES.items():
        row = next((line for line in section.splitlines() if f"`{label}`" in line), None)
        assert row is not None, f"{DOC.name} lacks a row for {label}"
        verdict = row.split("|")[2].strip()
        if isinstance(example, Runs):
            assert verdict == f"runs, {example.ranks} rank{'s' * (example.ranks > 1)}", row
        else:
            assert verdict == "needs the facility", row


class DatasetReceiver(BackgroundReceiver):
    """A :class:`BackgroundReceiver` that also keeps each message's HDF5 dataset paths."""

    def __init__(self, url: str, library: str, producers: int) -> None:
        self.datasets: list[set[str]] = []
        super().__init__(url, library, bind=True, producers=producers)

    def _run(self, url: str, library: str, bind: bool, producers: int) -> None:
        for message in receive_messages(
            url, library, bind=bind, expect_producers=producers, timeout_s=60, report=self.report
        ):
            self.events_per_message.append(message.events)
            self.datasets.append({path.strip("/") for path in message.shapes})


@dataclass
class Stream:
    handler: int
    receivers: list[tuple[DatasetReceiver, int]]  # (receiver, ranks dialling its URL)


def xtc_data(tmp_path: Path, config: StreamerConfig, spec: Runs) -> tuple[str, Path]:
    """xtcwriter data for the example's exp/run; returns (source_identifier, data folder)."""
    kwargs = parse_source_identifier(config.source_identifier)
    folder = tmp_path / "xtc"
    try:
        write_named_run(folder, kwargs["exp"], int(kwargs["run"]), spec.renames, spec.events)
    except RuntimeError as err:
        service_unavailable("psana", str(err))
    return f"{config.source_identifier.strip()},dir={folder}", folder


@pytest.fixture(autouse=True)
def _psana_leaves_no_environment() -> Iterator[None]:
    """psana's ``DataSource`` sets ``PS_R_MAX_RETRIES=0`` and ``PS_PROMETHEUS_JOBID`` in
    ``os.environ``: in this process they would reach every later test's streamer (a live-mode
    test, told to wait 0 s for its files, failed in clean-clone CI runs from it)."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def psana_counts(folder: Path, config: StreamerConfig) -> tuple[int, int]:
    """(events with every psana2 data source present, events written), read by psana itself:
    ``det.raw.raw(evt)`` for ``raw.raw``, ``det(evt)`` for a PV."""
    from psana import DataSource

    (big,) = folder.glob("*-s000-c000.xtc2")
    run = next(DataSource(files=str(big), skip_calib_load="all").runs())
    readers = []
    for source in config.data_sources.values():
        if isinstance(source, Psana2DetectorInterface):
            for chain in source.psana_fields or [""]:
                method: Any = run.Detector(source.psana_name)
                for part in filter(None, chain.split(".")):
                    method = getattr(method, part)
                readers.append(method)
    complete = written = 0
    for evt in run.events():
        written += 1
        complete += all(read(evt) is not None for read in readers)
    return complete, written


def message_events(path: Path, fields: dict[str, str]) -> int:
    """Events in one written HDF5 message: the first axis of its largest dataset, after
    checking that every dataset the serializer's ``fields`` name is there."""
    with h5py.File(path) as h5:
        shapes: dict[str, tuple[int, ...]] = {}
        h5.visititems(
            lambda name, obj: (
                shapes.__setitem__(name, obj.shape) if isinstance(obj, h5py.Dataset) else None
            )
        )
    for target in fields.values():
        assert target.strip("/") in shapes, (path.name, target, sorted(shapes))
    return max((s for s in shapes.values() if s), key=math.prod)[0]


def set_value(value: str | list[str]) -> str:
    """A ``--set`` value (read back as YAML): a plain string, or a flow list of URLs."""
    text = f"[{', '.join(value)}]" if isinstance(value, list) else value
    assert yaml.safe_load(text) == value
    return text


@pytest.mark.parametrize(("path", "spec"), RUNNABLE)
def test_example_runs_with_exact_counts(path: Path, spec: Runs, tmp_path: Path) -> None:
    text = path.read_text()
    config = parse_streamer_config(text)
    settings: dict[str, Any] = {}
    folder = None
    if isinstance(config.event_source, Psana2EventSource):
        settings["source_identifier"], folder = xtc_data(tmp_path, config, spec)
    streams: list[Stream] = []
    for index, handler in enumerate(config.data_handlers):
        if isinstance(handler, BinaryDataStreamingDataHandler):
            urls = [f"tcp://127.0.0.1:{free_port()}" for _ in handler.urls]
            settings[f"data_handlers[{index}].urls"] = urls
            dialling = [
                sum(1 for r in range(spec.ranks) if not handler.distribute or r % len(urls) == u)
                for u in range(len(urls))
            ]
            streams.append(
                Stream(
                    index,
                    [
                        (DatasetReceiver(url, handler.library, producers=n), n)
                        for url, n in zip(urls, dialling, strict=True)
                        if n
                    ],
                )
            )
        elif isinstance(handler, BinaryFileWritingDataHandler):
            assert not Path(handler.write_directory).is_absolute(), "writes outside the test"
    # what the run reads is the example with exactly these changes
    patched = parse_streamer_config(text, patch=settings)
    assert patched.model_copy(update={"source_identifier": config.source_identifier}) == (
        config.model_copy(update={"data_handlers": patched.data_handlers})
    )

    work = tmp_path / "work"
    work.mkdir()
    command = [str(BIN / "lclstreamer"), "-c", str(path)]
    for key, value in settings.items():
        command += ["--set", f"{key}={set_value(value)}"]
    if spec.ranks > 1:
        mpiexec = venv_bin("mpiexec")
        if mpiexec is None:
            service_unavailable(
                "mpi", "mpiexec not found: pip install 'airflow-provider-lclstream[mpi]'"
            )
        command = [str(mpiexec), "-n", str(spec.ranks), *command]
    env = {**os.environ, "LCLSTREAM_LOGBOOK_URL": f"http://127.0.0.1:{free_port()}"}
    result = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    total = total_line(result.stdout)
    assert total["ranks"] == spec.ranks and total["errors"] == []

    if isinstance(config.event_source, InternalEventSource):
        events = config.event_source.number_of_events_to_generate * spec.ranks
        assert total["skipped"] == 0
    else:
        assert folder is not None
        events, written = psana_counts(folder, config)
        assert 0 < events <= written and total["skipped"] == written - events
    pipeline = config.processing_pipeline
    assert isinstance(pipeline, BatchProcessingPipeline), "the counts below assume batches"
    batch = pipeline.batch_size
    messages = sum(math.ceil(e / batch) for e in total["per_rank_events"])
    assert total["events"] == events and total["messages"] == messages
    assert messages >= (2 if spec.ranks == 1 else spec.ranks)  # more than one message each

    fields = (
        config.data_serializer.fields
        if isinstance(config.data_serializer, HDF5BinarySerializer)
        else {}
    )
    present = {k: v for k, v in fields.items() if k in config.data_sources}
    for stream in streams:
        got_messages = got_events = 0
        for receiver, producers in stream.receivers:
            report = receiver.join()
            assert report.ok and len(report.ended) == producers, report.summary()
            got_messages += report.messages
            got_events += sum(receiver.events_per_message)
            for datasets in receiver.datasets:
                assert {v.strip("/") for v in present.values()} <= datasets, datasets
        assert (got_messages, got_events) == (messages, events), f"handler {stream.handler}"
    for handler in config.data_handlers:
        if isinstance(handler, BinaryFileWritingDataHandler):
            prefix = f"{handler.file_prefix}_" if handler.file_prefix else ""
            files = sorted((work / handler.write_directory).iterdir())
            assert all(
                re.fullmatch(rf"{re.escape(prefix)}r\d+_\d+\.{handler.file_suffix}", f.name)
                for f in files
            ), files
            assert len(files) == messages
            assert sum(message_events(f, present) for f in files) == events


@pytest.mark.psana
def test_renamed_xtcwriter_data_has_what_the_examples_read(tmp_path: Path) -> None:
    """psana itself finds the renamed detector and PV, with the fields the runnable examples
    read; and lacks those the "needs facility" reasons name."""
    from psana import DataSource

    renames = {CSPAD: "jungfrau", PVS[0]: "SIOC:SYS0:ML00:AO192"}
    try:
        folder = write_named_run(tmp_path / "xtc", "mfx100852324", 355, renames, events=8)
    except RuntimeError as err:
        service_unavailable("psana", str(err))
    (big,) = folder.glob("*.xtc2")
    assert (folder / "smalldata" / (big.name[:-5] + ".smd.xtc2")).stat().st_size > 0
    run = next(DataSource(files=str(big), skip_calib_load="all").runs())
    assert "jungfrau" in run.detnames and CSPAD not in run.detnames
    assert ("jungfrau", "cspad", "raw", "2_3_42") in run.xtcinfo  # only the name changed
    assert {k[0] for k in run.epicsinfo} == {"SIOC:SYS0:ML00:AO192", PVS[1]}
    jungfrau, pv = run.Detector("jungfrau"), run.Detector("SIOC:SYS0:ML00:AO192")
    assert not hasattr(jungfrau.raw, "_det_geotxt_default")  # SIMPLON's reason
    hsd = run.Detector(HSD).raw
    assert not hasattr(hsd, "peaks") and not hasattr(hsd, "waveforms")  # RIX/TMO's reason
    assert not {"gmd", "xgmd", "andor", "ebeam", "ebeamh"} & set(run.detnames)
    values = []
    for evt in run.events():
        raw = jungfrau.raw.raw(evt)
        assert raw.shape == (2, 3, 6) and raw.dtype.name == "uint16"
        assert jungfrau.raw.image(evt).ndim == 2
        values.append(pv(evt))
    assert len(values) == 8 and values[-1] is not None  # EPICS values from a SlowUpdate on


@pytest.mark.psana
@pytest.mark.parametrize(
    "label", [k for k, v in EXAMPLES.items() if "raw.image" in getattr(v, "reason", "")]
)
def test_calibrated_example_is_refused_offline_before_any_message(
    label: str, tmp_path: Path
) -> None:
    """The CALIB_IMAGE reason holds: on the same data, offline, the run refuses the raw.image
    source by name before anything is written."""
    path = dict(LABELLED).get(label)
    if path is None:
        pytest.skip(f"{label}: the upstream corpus is not named ($LCLSTREAM_UPSTREAM_CONFIGS)")
    config = parse_streamer_config(path.read_text())
    name = next(
        s.psana_name for s in config.data_sources.values() if isinstance(s, Psana2DetectorInterface)
    )
    source_identifier, _ = xtc_data(tmp_path, config, Runs(renames={CSPAD: name}))
    work = tmp_path / "work"
    work.mkdir()
    result = subprocess.run(
        [
            str(BIN / "lclstreamer"),
            "-c",
            str(path),
            "--set",
            f"source_identifier={source_identifier}",
        ],
        cwd=work,
        env={**os.environ, "LCLSTREAM_PSANA_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "assembled_detector_data" in result.stderr and "calibration: skip" in result.stderr
    assert not any(work.rglob("*.h5")), "a message was written before the refusal"
