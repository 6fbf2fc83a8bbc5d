"""``supportbot knowledge``: try the FAQ retrieval and measure its quality."""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from pathlib import Path

import click

from supportbot.cli.knowledge_import import import_cmd
from supportbot.config import Settings
from supportbot.knowledge import Embedder, KnowledgeBase, check_knowledge
from supportbot.knowledge.evaluation import (
    SPLITS,
    QueryFileError,
    confidence_report,
    evaluate,
    read_queries,
    split_queries,
)


def _settings() -> Settings:
    return Settings()


def _open_kb(
    settings: Settings, knowledge_dir: Path | None, lexical_only: bool, tmp: str
) -> KnowledgeBase:
    embedder = None if lexical_only else Embedder.from_settings(settings)
    if knowledge_dir is None or Path(knowledge_dir).resolve() == settings.knowledge_dir.resolve():
        index = settings.data_dir / "knowledge-index.sqlite3"
        return KnowledgeBase(settings.knowledge_dir, index, embedder)
    # another directory: a throwaway index, so the bot's cached index stays as it is
    return KnowledgeBase(knowledge_dir, Path(tmp) / "index.sqlite3", embedder)


_dir_option = click.option(
    "--knowledge-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="FAQ directory (default: SUPPORTBOT_KNOWLEDGE_DIR).",
)
_lexical_option = click.option(
    "--lexical-only", is_flag=True, help="Ignore configured embeddings (local or endpoint)."
)


@click.group()
def knowledge() -> None:
    """Search the FAQ, check it for errors, and measure retrieval quality."""


knowledge.add_command(import_cmd)  # supportbot knowledge import (supportbot.cli.knowledge_import)


@knowledge.command()
@click.argument("query")
@click.option("-k", "k", default=5, show_default=True, help="Number of hits.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per hit.")
@_dir_option
@_lexical_option
def search(
    query: str, k: int, as_json: bool, knowledge_dir: Path | None, lexical_only: bool
) -> None:
    """Show the FAQ entries that best match QUERY, with their confidence."""
    settings = _settings()

    async def run() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            kb = _open_kb(settings, knowledge_dir, lexical_only, tmp)
            try:
                await kb.refresh()
                await kb.embeddings_ready()
                for p in kb.problems:
                    click.echo(f"warning: {p}", err=True)
                hits = await kb.search(query, k=k)
            finally:
                await kb.aclose()
        threshold = settings.faq_confidence
        for hit in hits:
            e = hit.entry
            if as_json:
                click.echo(
                    json.dumps(
                        {
                            "id": e.id,
                            "score": hit.score,
                            "question": e.question,
                            "answer": e.answer,
                            "url": e.url,
                            "path": str(e.path),
                            "line": e.line,
                        },
                        ensure_ascii=False,
                    )
                )
            else:
                mark = "*" if hit.score >= threshold else " "
                click.echo(f"{mark} {hit.score:.2f}  {e.id}  {e.question}")
        if not hits and not as_json:
            click.echo("no match")

    asyncio.run(run())


@knowledge.command()
@_dir_option
def check(knowledge_dir: Path | None) -> None:
    """Report broken FAQ files as file:line: message (exit status 1 if any)."""
    directory = knowledge_dir or _settings().knowledge_dir
    problems = check_knowledge(directory)
    for p in problems:
        click.echo(str(p))
    if problems:
        sys.exit(1)
    click.echo("ok")


@knowledge.command(name="eval")
@click.argument("queries_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_dir_option
@click.option("--json", "as_json", is_flag=True, help="One line per query, then a summary.")
@click.option(
    "--split",
    type=click.Choice(SPLITS),
    default="all",
    show_default=True,
    help="Score all queries, or those at even / odd positions of the file (tune on one half, "
    "report the other).",
)
@click.option(
    "--threshold",
    type=float,
    default=None,
    help="Answer-alone threshold to report on (default: SUPPORTBOT_FAQ_CONFIDENCE).",
)
@_lexical_option
def eval_cmd(
    queries_file: Path,
    knowledge_dir: Path | None,
    as_json: bool,
    split: str,
    threshold: float | None,
    lexical_only: bool,
) -> None:
    """Measure hit@1, recall@5 and MRR@10 on QUERIES_FILE (JSONL: query, relevant ids), and how
    often the bot would answer from the FAQ alone with a wrong entry at the threshold."""
    settings = _settings()
    try:
        queries = split_queries(read_queries(queries_file), split)
    except QueryFileError as exc:
        raise click.ClickException(str(exc)) from None
    threshold = settings.faq_confidence if threshold is None else threshold

    async def run() -> tuple[dict, list[dict], str]:
        with tempfile.TemporaryDirectory() as tmp:
            kb = _open_kb(settings, knowledge_dir, lexical_only, tmp)
            try:
                await kb.refresh()
                await kb.embeddings_ready()
                for p in kb.problems:
                    click.echo(f"warning: {p}", err=True)
                mode = "hybrid" if kb.embedder is not None and kb.dense_ready else "lexical"
                if kb.embedder is not None and mode == "hybrid":  # one batched call
                    await kb.embedder.embed_queries([q["query"] for q in queries])
                summary, rows = await evaluate(kb, queries)
                return summary, rows, mode
            finally:
                await kb.aclose()

    summary, rows, mode = asyncio.run(run())
    summary = {"split": split, "mode": mode, **summary}
    report = confidence_report(rows, threshold)
    if as_json:
        for row in rows:
            click.echo(
                json.dumps(
                    {"query": row["query"], "relevant": row["relevant"], "ranked": row["ranked"]},
                    ensure_ascii=False,
                )
            )
        click.echo(json.dumps({"summary": summary, "confidence": report}))
    else:
        click.echo(
            f"split {split}  {mode}  queries {summary['queries']}  hit@1 {summary['hit@1']:.3f}  "
            f"recall@5 {summary['recall@5']:.3f}  MRR@10 {summary['mrr@10']:.3f}"
        )
        click.echo(
            f"threshold {threshold:.2f}: answers from the FAQ alone {report['answered_share']:.1%}"
            f" of queries, {report['wrong_share']:.1%} of them with a wrong entry; "
            f'"I don\'t know" with the right entry at rank 1: {report["missed_share"]:.1%}'
        )
