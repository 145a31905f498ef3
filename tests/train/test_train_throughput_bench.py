"""bench/train_throughput.py: grouped forward passes train like one pass, on the same batches."""

import json


def test_grouped_arms_match_the_one_pass_losses(load_bench, tiny_data, tiny_trained, capsys):
    # tiny_data's rows (copy and reverse, level 1) differ in length, so grouping changes the padding
    bench = load_bench("train_throughput")
    model_dir, _ = tiny_trained
    result = bench.main(["--model", str(model_dir), "--data", str(tiny_data), "--groups", "1,3", "--batch-size", "32",
                         "--steps", "3", "--warmup", "1", "--json"])
    printed = json.loads(capsys.readouterr().out)
    assert printed["arms"].keys() == {"1", "3"} == result["arms"].keys()
    assert result["mean_row_length"] < result["padded_width"]
    assert result["arms"]["1"]["speedup"] == 1.0 and result["arms"]["3"]["speedup"] > 0
    assert result["arms"]["3"]["max_loss_diff_to_reference"] < 1e-4  # four optimizer steps, same losses
