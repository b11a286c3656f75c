"""Run ablation grids over caches and seeds: phase 1 where needed, phase 2, evaluation.

Reads: each dataset's train/val/test caches. Writes: run folders under OUT/runs (`store.py`:
projections, projected caches, heads, evaluations, each done once) and, per table,
OUT/<table>/ with the per-seed results and the paper-style table (`tables.py`).

For a dataset of backbone features, every seed trains its own phase-1 projection and projects
the three splits (an out-of-domain target's test split goes through the *source's* projection);
a joint-space dataset is used as it is, so its cosine and baseline rows do not depend on the
seed and are evaluated once. The seeds' heads of each row train as one stacked computation
(`diffusion_head.train.train_heads`; each head exactly as alone, each in its own run) where that
is faster (`stack_heads`: by default on CUDA, not on CPU), else one after another.
"""

import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

from ..cache import Cache, load_tensors
from ..coattention import CoAttentionScores, CoRerankConfig, load_coattention
from ..coattention.train import train_coattention
from ..contrastive import project_cache, train_contrastive
from ..device import resolve_device
from ..diffusion_head import DiffusionScores, RerankConfig, load_head
from ..diffusion_head.rerank import Samples, sampling_key
from ..diffusion_head.stacked_rerank import stacked_scores
from ..diffusion_head.train import HeadJob, load_joint, stacks_heads, train_head, train_heads
from ..errors import UserError
from ..evaluate import CosineScores
from ..evaluate.baselines import baseline_scores
from .config import AblationConfig, Dataset
from .figures import diffusion_figure, recall_figure
from .grids import HEAD_SYSTEMS, TABLES, Row, row_fits, table_pairs
from .measure import REPORT_TOP, measure
from .reports import write_reports
from .store import Splits, Store, file_identity
from .tables import write_table


class Ablation:
    """The grids of `grids.TABLES` over datasets and seeds; `run` returns each table's text."""

    def __init__(
        self,
        out: str | Path,
        cfg: AblationConfig = AblationConfig(),
        echo: Callable[[str], None] = print,
        progress: bool = False,
    ):
        self.out, self.cfg, self.echo, self.progress = Path(out), cfg, echo, progress
        self.store = Store(out)
        self.device = resolve_device(cfg.device)
        self.ran: list[str] = []  # runs done by this process, in order
        self.reused: list[str] = []  # runs an earlier process completed, skipped here
        self.samples = Samples()  # the last head evaluation's x0_hat (Gen and Gen+Dis share it)

    # -- tables -----------------------------------------------------------------------------
    def run(self, tables: list[str], datasets: list[Dataset]) -> dict[str, str]:
        self.check(tables, datasets)
        texts = {}
        for name in tables:
            pairs = table_pairs(name, datasets)
            records = [r for s, t in pairs for r in self.table_records(name, s, t)]
            texts[name] = write_table(self.out / name, name, records, self.cfg)
            self.echo(texts[name])
            self.echo(f"wrote {self.out / name}/results.json, results.csv, table.txt")
            if self.cfg.report:
                folder = self.out / name / "report"
                pages = write_reports(folder, records, self.cfg.protocol)
                self.echo(f"wrote {len(pages)} per-query report(s), listed in {folder}/index.html")
            if name == "strategy":
                for path in self.figures(records, *pairs[0]):
                    self.echo(f"wrote {path}")
        return texts

    @staticmethod
    def check(tables: list[str], datasets: list[Dataset]) -> None:
        """Refuse unknown tables, a missing dataset or cache, before any work."""
        for name in tables:
            if name not in TABLES:
                raise UserError(f"unknown table {name!r}; choose from {', '.join(TABLES)}")
        if not datasets:
            raise UserError("no dataset given: pass --data NAME=TRAIN.h5,VAL.h5,TEST.h5")
        if "ood" in tables and len(datasets) < 2:
            raise UserError("the ood table needs two datasets (--data twice): source and target")
        for d in datasets:
            for path in (d.train, d.val, d.test):
                if not Path(path).is_file():
                    raise UserError(f"{path}: no such cache file (dataset {d.name})")

    def figures(self, records: list[dict], source: Dataset, target: Dataset) -> list[Path]:
        """The recall curves and the diffusion process (first seed, first dataset)."""
        seed = self.cfg.seeds[0]
        mine = [r for r in records if r["seed"] == seed and r["train"] == source.name]
        folder = self.out / "strategy"
        title = f"{target.name} test, seed {seed}: R@k"
        paths = [recall_figure(mine, folder / f"recall_curves_{target.name}.png", title)]
        splits = self.splits(source, seed, target)
        test = load_joint(splits.test, "test")
        head = load_head(self.head(splits, {}, seed), self.device)
        paths.append(
            diffusion_figure(
                head,
                test.text.to(self.device),
                test.audio.to(self.device),
                test.audio_index,
                self.cfg.rerank.topk or 32,
                seed,
                folder / f"diffusion_process_{target.name}.png",
                self.cfg.figure_query,
            )
        )
        return [p for p in paths if p is not None]

    def table_records(self, name: str, source: Dataset, target: Dataset) -> list[dict]:
        """Every (row, seed) of one table for one source -> target pair, plus the baselines."""
        records, rows = [], self.table_rows(name)
        self.stacked_heads(rows, source, target)
        self.stacked_evaluations(rows, source, target)
        for seed in self.cfg.seeds:
            splits = self.splits(source, seed, target)
            for row in rows:
                if not row_fits(row, self.cfg):
                    continue  # sampling with more steps than the head was trained with
                record = self.evaluate(row, splits, seed)
                records.append(
                    {"train": source.name, "test": target.name, "row": row.label, **record}
                )
        return records

    def table_rows(self, name: str) -> list[Row]:
        """A table's rows, with cosine, the co-attention head (if asked for) and baselines."""
        rows = list(TABLES[name].rows)
        if not any(r.system == "cosine" for r in rows):
            rows.append(Row("Dis", "cosine"))
        if self.cfg.coattention is not None:
            rows.append(Row("co-attention", "coattention"))
        return rows + [Row(b, b) for b in self.cfg.baselines]

    # -- artefacts --------------------------------------------------------------------------
    def splits(self, source: Dataset, seed: int, target: Dataset) -> Splits:
        space = _space(source.train)
        for path in (source.val, target.test):
            if _space(path) != space:
                raise UserError(
                    f"{path}: a {_space(path)}-space cache, but {source.train} is {space}-space; "
                    "give every split of an ablation in the same space"
                )
        inputs = {"train": source.train, "val": source.val, "test": target.test}
        if space == "joint":
            key = {split: file_identity(path) for split, path in inputs.items()}
            return Splits(Path(source.train), Path(source.val), Path(target.test), key)
        proj, proj_key = self.projection(source, seed)
        done = {split: self.projected(proj, proj_key, path) for split, path in inputs.items()}
        key = {split: k for split, (_, k) in done.items()}
        return Splits(done["train"][0], done["val"][0], done["test"][0], key)

    def projection(self, source: Dataset, seed: int) -> tuple[Path, dict]:
        cfg = replace(self.cfg.contrastive, seed=seed, device=self.cfg.device)
        key = {
            "train": file_identity(source.train),
            "val": file_identity(source.val),
            "contrastive": asdict(cfg),
        }
        folder = self.store.run_dir("phase1", f"{source.name}-seed{seed}", key)
        path = folder / "projection.pt"
        self._once(
            folder,
            f"phase 1 on {source.name} (seed {seed})",
            lambda: train_contrastive(
                source.train, source.val, path, cfg, self.progress, echo=lambda _: None
            ),
        )
        return path, key

    def projected(self, proj: Path, proj_key: dict, cache: str) -> tuple[Path, dict]:
        """`cache` through the projection `proj` (a joint cache), and what it depends on."""
        key = {"projection": proj_key, "cache": file_identity(cache)}
        folder = self.store.run_dir("project", Path(cache).stem, key)
        path = folder / "joint.h5"
        self._once(
            folder,
            f"project {cache}",
            lambda: project_cache(cache, proj, path, device=self.cfg.device, overwrite=True),
        )
        return path, key

    def head_job(self, splits: Splits, overrides: dict, seed: int) -> tuple[Path, HeadJob, str]:
        """The run folder of one (row's head settings, seed), its training job and label."""
        cfg = replace(self.cfg.head, seed=seed, device=self.cfg.device, **overrides)
        val_rerank = replace(self.cfg.rerank, seed=seed)
        key = {
            "train": splits.key["train"],
            "val": splits.key["val"],
            "head": asdict(cfg),
            "validation": asdict(val_rerank),
        }
        label = ",".join(f"{k}={v}" for k, v in overrides.items()) or "base"
        folder = self.store.run_dir("head", f"{label}-seed{seed}", key)
        job = HeadJob(splits.train, splits.val, folder / "head.pt", cfg, val_rerank)
        return folder, job, label

    def head(self, splits: Splits, overrides: dict, seed: int) -> Path:
        folder, job, label = self.head_job(splits, overrides, seed)
        self._once(
            folder,
            f"train the head ({label}, seed {seed})",
            lambda: train_head(
                job.train, job.val, job.out, job.cfg, job.rerank, self.progress, lambda _: None
            ),
        )
        return job.out

    def stacked_heads(self, rows: list[Row], source: Dataset, target: Dataset) -> None:
        """Train the seeds of each head a table needs as one stacked computation.

        Rows that differ only in inference settings share one head per seed already (the same
        run); the seeds' heads differ only in their weights and random streams, so the ones
        not yet done train together (`train_heads`), each into its own run folder, exactly as
        `head` would train it alone. Runs already complete are left as they are.
        """
        if not stacks_heads(self.cfg.stack_heads, self.device) or len(self.cfg.seeds) < 2:
            return
        settings: list[dict] = []
        for row in rows:
            if row.system in HEAD_SYSTEMS and row_fits(row, self.cfg) and row.head not in settings:
                settings.append(row.head)
        for overrides in settings:
            pending = []
            for seed in self.cfg.seeds:
                folder, job, label = self.head_job(
                    self.splits(source, seed, target), overrides, seed
                )
                if self.store.done(folder) is None:
                    pending.append((folder, job))
            if len(pending) < 2:
                continue  # one head: `head` trains it alone
            self._hold([folder for folder, _ in pending])
            seeds = ",".join(str(job.cfg.seed) for _, job in pending)
            self.echo(f"train the heads ({label}, seeds {seeds}) as one stacked computation ...")
            t = time.perf_counter()
            train_heads([job for _, job in pending], self.progress, lambda _: None, True)
            total = time.perf_counter() - t
            # each run its share, as its own log counts it; the stack's total said beside it
            record = {"seconds": total / len(pending), "stacked_seeds": seeds,
                      "stacked_seconds": total}  # fmt: skip
            for folder, _ in pending:
                self.ran.append(folder.name)
                self.store.finish(folder, record)

    def coattention_head(self, splits: Splits, seed: int) -> Path:
        cfg = replace(self.cfg.coattention, seed=seed, device=self.cfg.device)
        key = {"train": splits.key["train"], "val": splits.key["val"], "coattention": asdict(cfg)}
        folder = self.store.run_dir("coattention", f"{cfg.variant}-seed{seed}", key)
        path = folder / "coattention.pt"
        self._once(
            folder,
            f"train the co-attention head ({cfg.variant}, seed {seed})",
            lambda: train_coattention(
                splits.train, splits.val, path, cfg, self.progress, lambda _: None
            ),
        )
        return path

    def head_evaluation(
        self, row: Row, splits: Splits, seed: int
    ) -> tuple[Path, Path, RerankConfig]:
        """A head row's evaluation run for one seed: its folder, head and re-ranking settings."""
        rerank = self.row_rerank(row, seed)
        head_path = self.head(splits, row.head, seed)
        key = {"system": row.system, "test": splits.key["test"], "protocol": self.cfg.protocol}
        key |= {"head": str(head_path), "rerank": asdict(rerank)}
        if self.cfg.report:
            key |= {"per_query": REPORT_TOP}
        return self.store.run_dir("eval", f"{row.system}-{row.label}", key), head_path, rerank

    def row_rerank(self, row: Row, seed: int) -> RerankConfig:
        rerank = replace(self.cfg.rerank, seed=seed, **row.rerank)
        return replace(rerank, mode="gen") if row.system == "diffatr-gen" else rerank

    def stacked_evaluations(self, rows: list[Row], source: Dataset, target: Dataset) -> None:
        """Evaluate the seeds' heads of each head row together where they share the test cache
        (joint-space data): one stacked DDIM re-ranks every seed's top-k (`stacked_rerank.py`;
        each head's scores as alone; 1.06x faster than head by head for three heads on one CPU
        thread), each record in its own run, as `evaluate` would write it."""
        if len(self.cfg.seeds) < 2:
            return
        for row in rows:
            if row.system not in HEAD_SYSTEMS or not row_fits(row, self.cfg):
                continue
            pending = []
            for seed in self.cfg.seeds:
                splits = self.splits(source, seed, target)
                folder, head_path, rerank = self.head_evaluation(row, splits, seed)
                if self.store.done(folder) is None:
                    pending.append((folder, head_path, rerank, splits.test))
            if len(pending) < 2 or len({str(p[3]) for p in pending}) != 1:
                continue  # one run, or per-seed test caches (backbone data): `evaluate`
            self._hold([p[0] for p in pending])
            self.echo(f"evaluate {row.system} {row.label} (seeds together) ...")
            t = time.perf_counter()
            test = load_joint(pending[0][3], "test")
            heads = [load_head(p[1], self.device) for p in pending]
            cfgs = [p[2] for p in pending]
            scores = stacked_scores(test.text, test.audio, heads, cfgs, self.device)
            index = test.audio_index.to(self.device)
            shared = (time.perf_counter() - t) / len(pending)  # loading and the stacked DDIM
            for (folder, _, _, test_path), s in zip(pending, scores, strict=True):
                t_own = time.perf_counter()
                record_path = folder / "queries.npz" if self.cfg.report else None
                out = measure(s, index, self.cfg.protocol, self.progress, record_path)
                if record_path is not None:
                    out |= {"queries": str(record_path), "test_cache": str(test_path)}
                out["seconds"] = shared + time.perf_counter() - t_own  # not the runs before it
                self.ran.append(folder.name)
                self.store.finish(folder, out)

    def evaluate(self, row: Row, splits: Splits, seed: int) -> dict:
        """One row's metrics on the test split for one seed (a cached run)."""
        uses_head = row.system in HEAD_SYSTEMS
        rerank = self.row_rerank(row, seed)
        key = {"system": row.system, "test": splits.key["test"], "protocol": self.cfg.protocol}
        if uses_head:
            head_path = self.head(splits, row.head, seed)
            key |= {"head": str(head_path), "rerank": asdict(rerank)}
        elif row.system == "coattention":
            head_path = self.coattention_head(splits, seed)
            co_rerank = CoRerankConfig(topk=rerank.topk)
            key |= {"head": str(head_path), "rerank": asdict(co_rerank)}
        elif row.system != "cosine":
            key |= {"baseline": asdict(self.cfg.baseline), "topk": rerank.topk}
            key |= {"bank": splits.key["train"]}
        if self.cfg.report:  # a separate run: earlier ones kept no per-query record
            key |= {"per_query": REPORT_TOP}
        folder = self.store.run_dir("eval", f"{row.system}-{row.label}", key)
        record_path = folder / "queries.npz" if self.cfg.report else None

        def run() -> dict:
            test = load_joint(splits.test, "test")
            if uses_head:
                head = load_head(head_path, self.device)
                # Gen and Gen+Dis of one head sample the same x0_hat: DDIM runs once for both
                key = [tuple(file_identity(p).values()) for p in (head_path, splits.test)]
                samples = self.samples.for_settings((*key, sampling_key(rerank)))
                scores = DiffusionScores(test.text, test.audio, head, rerank, self.device, samples)
            elif row.system == "cosine":
                scores = CosineScores(test.text, test.audio, self.device)
            elif row.system == "coattention":
                co = load_coattention(head_path, self.device)
                with Cache(splits.test) as cache:
                    scores = CoAttentionScores(
                        test.text, test.audio, co.model, co.config.tau, cache, co_rerank,
                        self.device,
                    )  # fmt: skip
            else:
                bank = load_tensors(splits.train)
                bcfg = replace(self.cfg.baseline, topk=rerank.topk)
                scores = baseline_scores(
                    row.system, test.text, test.audio, bcfg, bank.text, bank.audio, self.device
                )
            index = test.audio_index.to(self.device)
            out = measure(scores, index, self.cfg.protocol, self.progress, record_path)
            if record_path is not None:
                out |= {"queries": str(record_path), "test_cache": str(splits.test)}
            return out

        record = self._once(folder, f"evaluate {row.system} {row.label} (seed {seed})", run)
        return {"system": row.system, "seed": seed, **record}

    def _hold(self, folders: list[Path]) -> None:
        """Before a stacked computation fills the runs `folders`: one process has nothing to
        hold; several (`schedule.SharedAblation`) claim them all, or wait."""

    def _once(self, folder: Path, what: str, work: Callable[[], object]) -> dict:
        """Do `work` unless the run in `folder` completed before; return its record."""
        record = self.store.done(folder)
        if record is not None:
            if folder.name not in self.ran and folder.name not in self.reused:
                self.reused.append(folder.name)
            return record
        self.echo(f"{what} ...")
        t = time.perf_counter()
        result = work()
        record = result if isinstance(result, dict) else {}
        record = {**record, "seconds": time.perf_counter() - t}
        self.ran.append(folder.name)
        return self.store.finish(folder, record)


def _space(path: str | Path) -> str:
    with Cache(path) as cache:
        return cache.attrs.get("embedding_space", "joint")
