"""The vLLM-through-aiforge vs by-hand benchmark's pure parts: the hand-started launch as
vLLM's CPU docs write it, how it differs from aiforge's own plan, bench results, the report."""

from __future__ import annotations

from pathlib import Path

import pytest
from vllm_vs_direct import (
    Setup,
    Workload,
    aiforge_deployment,
    bench_endpoint,
    bench_source,
    direct_launch,
)
from vllm_vs_direct_report import (
    LaunchSeen,
    Measure,
    cli_options,
    cpu_list_text,
    launch_differences,
    level_rows,
    measure_from,
    parse_cpu_list,
    render_report,
    side_order,
)

from aiforge.bench.report import result_document
from aiforge.bench.runner import LevelResult, RunResult
from aiforge.bench.schedule import Load
from aiforge.bench.stats import RequestSample
from aiforge.bench.workload import load_tokenizer
from aiforge.engines.base import ReplicaSpec
from aiforge.engines.vllm import DEFAULT_KV_CACHE_GIB, VllmOptions, vllm_argv, vllm_env
from aiforge.testing.models import qwen3_tokenizer_dir

PYTHON = Path("/venv/bin/python")
SETUP = Setup(model=Path("/models/q"), threads=2, dtype="bfloat16", max_model_len=2048,
              max_num_seqs=16)  # fmt: skip


def test_cpu_lists_are_written_as_ranges_and_read_back() -> None:
    assert cpu_list_text([1, 0]) == "0-1"
    assert cpu_list_text([6, 0, 1, 2, 3]) == "0-3,6"
    assert cpu_list_text([4]) == "4"
    assert parse_cpu_list("0-3,6") == parse_cpu_list("0,1,2,3,6") == {0, 1, 2, 3, 6}
    with pytest.raises(ValueError, match="no CPUs"):
        cpu_list_text([])


def test_the_hand_started_server_follows_the_cpu_docs() -> None:
    argv, env = direct_launch(PYTHON, SETUP, 8001, cpus=[3, 2, 5])
    assert env == {
        "VLLM_CPU_KVCACHE_SPACE": str(DEFAULT_KV_CACHE_GIB),
        "VLLM_CPU_OMP_THREADS_BIND": "2-3",  # the first two CPUs this process may use
    }
    options = cli_options(argv)
    assert argv[:3] == [str(PYTHON), "-m", "vllm.entrypoints.openai.api_server"]
    assert options["--dtype"] == "bfloat16"
    assert options["--max-model-len"] == "2048"
    assert options["--max-num-seqs"] == "16"
    assert options["--load-format"] == "dummy"
    assert options["--port"] == "8001"
    with pytest.raises(ValueError, match="threads"):
        direct_launch(PYTHON, SETUP, 8001, cpus=[0])


def _aiforge_plan(cpus: list[int]) -> LaunchSeen:
    """aiforge's own vLLM launch plan for the benchmark's deployment (pure functions)."""
    deployment = aiforge_deployment(SETUP)
    spec = ReplicaSpec(
        model_path=SETUP.model, served_model_name="routing-bench", port=9, dtype="bfloat16",
        max_model_len=deployment["max_model_len"], extra_args=tuple(deployment["engine_args"]),
        threads=deployment["threads"], cpus=tuple(cpus),
    )  # fmt: skip
    options = VllmOptions()
    argv = vllm_argv(PYTHON, spec, options)
    env = vllm_env(spec, options, cache_root=Path("/cache"), gpu=False, cpus=cpus)
    return LaunchSeen(argv, env, threads={})


def test_aiforge_plan_differs_from_the_docs_only_where_expected() -> None:
    """Same entry point, dtype, context, batch, KV cache and OpenMP CPUs as the docs'
    launch; what remains are aiforge's API features and housekeeping."""
    argv, env = direct_launch(PYTHON, SETUP, 8001, cpus=[0, 1])
    differences = launch_differences(LaunchSeen(tuple(argv), env, {}), _aiforge_plan([0, 1]))
    names = {line.split(":")[0] for line in differences}
    assert names == {
        "option --enable-auto-tool-choice", "option --tool-call-parser",
        "option --reasoning-parser", "option --enable-prefix-caching",
        "option --uvicorn-log-level", "env VLLM_CACHE_ROOT", "env VLLM_NO_USAGE_STATS",
        "env DO_NOT_TRACK", "env HF_HUB_OFFLINE",
    }  # fmt: skip


def test_a_different_binding_or_kv_space_is_reported() -> None:
    argv, env = direct_launch(PYTHON, SETUP, 8001, cpus=[0, 1])
    direct = LaunchSeen(tuple(argv), env, {"python": {"0-1": 3}})
    aiforge = LaunchSeen(
        tuple(argv),
        {**env, "VLLM_CPU_OMP_THREADS_BIND": "0", "VLLM_CPU_KVCACHE_SPACE": "4"},
        {"python": {"0": 3}},
    )
    assert launch_differences(direct, aiforge) == [
        "env VLLM_CPU_KVCACHE_SPACE: direct 2 / aiforge 4",
        "env VLLM_CPU_OMP_THREADS_BIND: direct 0-1 / aiforge 0",
        "thread CPUs: direct python: 0-1 x3 / aiforge python: 0 x3",
    ]
    same_cpus = LaunchSeen(tuple(argv), {**env, "VLLM_CPU_OMP_THREADS_BIND": "0,1"},
                           {"python": {"0-1": 7}})  # fmt: skip
    assert launch_differences(direct, same_cpus) == []


def test_cli_options() -> None:
    assert cli_options(["python", "-m", "x", "--a", "b", "--flag", "--c=d", "--e", "-1"]) == {
        "--a": "b", "--flag": "", "--c": "d", "--e": "-1",
    }  # fmt: skip


def test_bench_requests_are_streamed_greedy_and_of_fixed_length() -> None:
    work = Workload(prompt_tokens=40, output_tokens=64, rounds=4)
    endpoint = bench_endpoint("http://h/v1", "sk-1", work)
    assert (endpoint.api, endpoint.stream, endpoint.ignore_eos) == ("chat", True, True)
    assert endpoint.temperature == 0.0
    assert endpoint.headers() == {"Authorization": "Bearer sk-1"}
    assert bench_endpoint("http://h/v1", None, work).headers() == {}
    tokenizer = load_tokenizer(qwen3_tokenizer_dir())
    first, other = (bench_source(work, tokenizer)(seed=s, limit=2) for s in (1, 2))
    request = first.next_ready()
    assert request is not None
    assert request.max_tokens == 64
    assert request.messages is not None
    assert abs(len(tokenizer.encode(request.messages[0]["content"])) - 40) <= 2
    assert other.next_ready() != request  # another seed, other prompts
    completions = Workload(40, 64, 4, endpoint="completions")
    assert bench_endpoint("http://h/v1", None, completions).api == "completions"
    prompt = bench_source(completions, tokenizer)(seed=1, limit=1).next_ready()
    assert prompt is not None
    assert isinstance(prompt.prompt, str)


def _document(concurrency: int, samples: list[RequestSample]) -> dict[str, object]:
    level = LevelResult(Load("concurrency", concurrency), samples, wall_s=2.0)
    run = RunResult([], [level], (0.1, 0.1, 0.1), (0.2, 0.2, 0.2), 0.0, 2.0)
    return result_document(run, {"model": "m"})


def test_a_measure_is_read_from_an_aiforge_bench_document() -> None:
    samples = [
        RequestSample(0, 0.0, 1.0, ttft_s=0.2, itl_s=(0.1, 0.1, 0.3), output_tokens=4),
        RequestSample(1, 0.0, 2.0, ttft_s=0.4, itl_s=(0.2, 0.2, 0.2), output_tokens=4),
    ]
    measure = measure_from(_document(2, samples), "aiforge", 1, server_cpu_s=0.8,
                           gateway_cpu_s=0.08)  # fmt: skip
    assert (measure.concurrency, measure.requests, measure.errors) == (2, 2, 0)
    assert measure.output_tokens == 8
    assert measure.output_tok_s == pytest.approx(4.0)  # 8 tokens in the 2 s window
    assert measure.ttft_p50_s == pytest.approx(0.3)
    assert measure.itl_p50_s == pytest.approx(0.2)
    assert measure.cpu_ms_per_token == pytest.approx(100.0)
    assert measure.gateway_cpu_ms_per_token == pytest.approx(10.0)
    assert measure.load_average == pytest.approx(0.1)


def _measure(side: str, rep: int, streams: int, tok_s: float, ttft: float = 0.1) -> Measure:
    return Measure(side, rep, streams, requests=8, errors=0, output_tokens=1000,
                   output_tok_s=tok_s, ttft_p50_s=ttft, itl_p50_s=0.05, tpot_p50_s=0.05,
                   server_cpu_s=2.0, gateway_cpu_s=0.1 if side == "aiforge" else None)  # fmt: skip


def test_rows_pair_repetitions_and_the_report_gives_the_verdict() -> None:
    measures = [
        _measure("direct", 0, 1, 10.0), _measure("aiforge", 0, 1, 9.9, ttft=0.12),
        _measure("aiforge", 1, 1, 10.2), _measure("direct", 1, 1, 10.0),
        _measure("direct", 0, 8, 40.0), _measure("aiforge", 0, 8, 36.0),
        _measure("aiforge", 1, 8, 37.0), _measure("direct", 1, 8, 40.0),
    ]  # fmt: skip
    one, eight = level_rows(measures)
    assert one.tok_s_ratio == pytest.approx(10.05 / 10.0)
    assert one.tok_s_ratio_range == pytest.approx((0.99, 1.02))
    assert one.meets_target
    assert not eight.meets_target
    text = render_report([one, eight], "heading")
    assert (
        "| 1 | 10.0 | 10.1 | **1.005** (0.99–1.02) | 100.0 / 110.0 (1.10) | 50.0 / 50.0 (1.00) "
        "| 50.0 / 50.0 (1.00) | 2.0 / 2.0 (0.1) | 0 |"
    ) in text
    assert "at 1, 8 streams: NOT met" in text
    assert render_report([one], "h").endswith("at 1 streams: met")


def test_sides_alternate_which_goes_first() -> None:
    assert [side_order(rep) for rep in range(3)] == [
        ("direct", "aiforge"), ("aiforge", "direct"), ("direct", "aiforge"),
    ]  # fmt: skip
