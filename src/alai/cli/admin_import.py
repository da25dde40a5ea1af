"""`alai admin import`: a legacy Mission Control or HiveMind SQLite file into the control plane's database."""

from __future__ import annotations

import getpass
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from alai.cli.admin import DATA_DIR_OPTION, _server_modules, admin, run_in_database
from alai.cli.output import console, print_json

SQLITE_MAGIC = b"SQLite format 3\x00"
WARNINGS_SHOWN = 20
NAMES_SHOWN = 20


def _check_source(path: Path) -> None:
    if not path.exists():
        raise click.ClickException(f"{path}: no such file; give the path of mission-control.db or hivemind.db")
    if path.is_dir():
        raise click.ClickException(f"{path} is a folder; give the path of mission-control.db or hivemind.db")
    with open(path, "rb") as handle:
        if handle.read(len(SQLITE_MAGIC)) != SQLITE_MAGIC:
            raise click.ClickException(f"{path} is not an SQLite database; give the old Mission Control or "
                                       "HiveMind file")


def _kind_of(path: Path, kind: str) -> str:
    """mc or hive: as asked, else by the file's tables (Mission Control when neither is clear,
    as its import finds tasks by their columns or by --map)."""
    if kind != "auto":
        return kind
    from alai.server.hive import import_source
    from alai.server.problems import ProblemError

    try:
        found = import_source.kind_of(path)
    except ProblemError as error:
        raise click.ClickException(error.detail) from None
    if found == "both":
        raise click.ClickException(f"{path.name} holds both Mission Control tasks and HiveMind messages; "
                                   "import it twice, with --kind mc and with --kind hive")
    return found or "mc"


def _load_mapping(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    try:
        import yaml
    except ImportError:
        raise click.ClickException("--map needs PyYAML, part of the server extra: pip install 'alai[server]'") from None
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise click.ClickException(f"cannot read the mapping {path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise click.ClickException(f"the mapping {path} is not valid YAML{line}; fix it or leave --map out") from None
    if data is None:
        return None
    if not isinstance(data, dict):
        raise click.ClickException(f"the mapping {path} must be a YAML mapping with tables/columns/statuses/priorities")
    return data


@contextmanager
def _progress_bar(enabled: bool):
    """A callback for the importer that draws rich progress bars on stderr (or does nothing)."""
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bars: dict[str, Any] = {}
    with Progress(TextColumn("{task.description:<22}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=Console(stderr=True), transient=True) as progress:
        def update(stage: str, done: int, total: int) -> None:
            if stage not in bars:
                bars[stage] = progress.add_task(stage, total=total or None)
            progress.update(bars[stage], completed=done, total=total or None)

        yield update


@admin.command("import")
@click.argument("path", type=click.Path(path_type=Path, dir_okay=True))
@click.option("--map", "mapping_path", type=click.Path(path_type=Path, dir_okay=False, exists=False),
              help="YAML that overrides the detected tables, columns, statuses, priorities (mc), topics (hive).")
@click.option("--kind", type=click.Choice(["auto", "mc", "hive"]), default="auto", show_default=True,
              help="Which old tool wrote the file; auto tells them apart by their tables.")
@click.option("--dry-run", is_flag=True, help="Report what would be imported; write nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@DATA_DIR_OPTION
def import_command(path: Path, mapping_path: Path | None, kind: str, dry_run: bool, as_json: bool,
                   data_dir: Path | None) -> None:
    """Import a legacy Mission Control (mission-control.db) or HiveMind (hivemind.db) database.

    Mission Control: tasks keep their ids (MC-1 …); comments and history come
    along. HiveMind: messages keep their channel as topic, their order and their
    time; memories and agents come along. Every row of every table is also kept
    verbatim. Rows that do not map cleanly are imported with their problems
    listed. Running it again with the same file changes nothing; a failure leaves
    the database as it was.

    \b
    A mapping (--map mapping.yaml) overrides what is detected, e.g.:
      tables:     {tasks: legacy_tasks}          (hive: messages, memories, agents)
      columns:    {tasks: {title: name}}
      statuses:   {open: todo}                   (mc)
      priorities: {high: 1}                      (mc)
      topics:     {"general chat": chat.general} (hive: channel → topic)
      memory_namespace: legacy                   (hive: one namespace for all memories)
    """
    _check_source(path)
    mapping = _load_mapping(mapping_path)
    _, _, Settings = _server_modules()
    kind = _kind_of(path, kind)
    actor = f"alai admin import ({getpass.getuser()})"
    if kind == "hive":
        from alai.server.hive import importer as hive_importer

        def work(conn, progress):
            return hive_importer.import_legacy(conn, path=path, mapping=mapping, dry_run=dry_run, actor=actor,
                                               progress=progress, source_name=path.name)
    else:
        from alai.server.mc import importer
        from alai.server.settings import comma_list

        settings = Settings(**({"data_dir": data_dir} if data_dir else {}))

        def work(conn, progress):
            return importer.import_legacy(
                conn, path=path, mapping=mapping, dry_run=dry_run, actor=actor,
                statuses=comma_list(settings.mc_statuses), closed_statuses=comma_list(settings.mc_closed_statuses),
                progress=progress, source_name=path.name)
    with _progress_bar(sys.stderr.isatty()) as progress:
        report = run_in_database(data_dir, lambda conn: work(conn, progress))
    if as_json:
        print_json(report.model_dump(mode="json"))
        return
    _show_report(report)


def _show_report(report) -> None:
    from rich.table import Table

    out = console()
    table = Table(title=f"{report.source} (sha256 {report.source_sha256[:12]}…)", title_justify="left")
    for heading in ("table", "rows read", "rows written", "with problems"):
        table.add_column(heading, justify="left" if heading == "table" else "right")
    for item in report.tables:
        table.add_row(item.table, str(item.rows_read), str(item.rows_written), str(item.rows_with_problems))
    out.print(table)
    if getattr(report, "status_map", None):
        out.print("statuses:   " + ", ".join(f"{source} → {target}" for source, target in report.status_map.items()))
    if getattr(report, "priority_map", None):
        out.print("priorities: " + ", ".join(f"{source} → {target}" for source, target in
                                              sorted(report.priority_map.items())))
    _show_names(out, "topics", getattr(report, "topic_map", {}))
    _show_names(out, "namespaces", getattr(report, "namespace_map", {}))
    if report.warnings:
        out.print(f"warnings ({len(report.warnings)}):")
        for warning in report.warnings[:WARNINGS_SHOWN]:
            out.print(f"  {warning}", markup=False)
        if len(report.warnings) > WARNINGS_SHOWN:
            out.print(f"  … {len(report.warnings) - WARNINGS_SHOWN} more: run with --json for all")
    if report.already_imported:
        verdict = "already imported: nothing changed"
    elif report.dry_run:
        verdict = "dry run: nothing was written"
    else:
        verdict = "imported"
    out.print(f"{verdict} ({report.duration_seconds:.2f} s)")


def _show_names(out, what: str, mapping: dict[str, str]) -> None:
    """Names that changed on the way in; the others are only counted."""
    if not mapping:
        return
    changed = [(source, target) for source, target in mapping.items() if source != target]
    kept = len(mapping) - len(changed)
    line = f"{what + ':':<11} {kept} kept their name"
    if changed:
        line += ", " + ", ".join(f"{source!r} → {target}" for source, target in changed[:NAMES_SHOWN])
        if len(changed) > NAMES_SHOWN:
            line += f", … {len(changed) - NAMES_SHOWN} more (--json)"
    out.print(line, markup=False)
