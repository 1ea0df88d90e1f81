"""``medslm export --model REF --out FILE.gguf --type q4_k_m`` and
``medslm export --model Q --format compressed-tensors --out DIR``."""

from __future__ import annotations

import argparse

from medslm.commands import examples, threads_arg


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="export to GGUF for llama.cpp (f16, q8_0, q4_k_m, ...) or compressed-tensors (vLLM, transformers)",
        description="Convert an artifact to GGUF with llama.cpp's own converter (fetched once from the "
                    "llama-cpp-python sdist, or MEDSLM_LLAMACPP_DIR); k-quants by llama.cpp's quantizer. "
                    "Writes FILE.gguf and FILE.gguf.medslm.json (provenance).",
        epilog=examples("medslm export --model gemma3-270m --type f16 --out runs/base-f16.gguf",
                        "medslm quantize --model gemma3-270m --bits 4 --group-size 32 --out runs/q4",
                        "medslm export --model runs/q4 --out runs/q4.gguf   (q4_0 blocks of medslm's integers)",
                        "medslm export --model runs/lora --type q4_k_m --out runs/lora-q4_k_m.gguf",
                        "medslm export --model runs/lora --type q4_0 --tensor-type 'ffn_(gate|up|down)|attn_v=q8_0' "
                        "--tensor-type token_embd=q5_0 --imatrix pubmedqa,medquad --out runs/lora-mix.gguf   "
                        "(llama.cpp's quantizer: per-tensor types, its importance matrix on medical texts)",
                        "medslm export --model runs/lora --type q4_k_m --imatrix pubmedqa,medquad --save-imatrix "
                        "runs/med.imatrix.gguf --out runs/lora-q4km.gguf   (the matrix also for llama-quantize)",
                        "medslm export --model runs/lora --type iq4_xs --imatrix imatrix.gguf --out runs/lora-iq4.gguf   "
                        "(a matrix llama-imatrix wrote)",
                        "medslm eval --backend llamacpp --model runs/lora-q4_k_m.gguf --tasks pubmedqa",
                        "medslm export --model runs/q4 --format compressed-tensors --out runs/q4-ct   "
                        "(pack-quantized: vLLM, transformers)"),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="gemma3-270m")
    p.add_argument("--out", required=True, metavar="FILE.gguf|DIR")
    p.add_argument("--format", default="gguf", choices=("gguf", "compressed-tensors"),
                   help="gguf (llama.cpp; default) or compressed-tensors (a Hugging Face directory of medslm's "
                        "integers, pack-quantized, as llm-compressor writes and vLLM and transformers read)")
    p.add_argument("--type", default=None, help="f32 | f16 | bf16 | q8_0 | q4_0 | q4_1 | q5_0 | q5_1 | q2_k | "
                   "q3_k_m | q4_k_s | q4_k_m | q5_k_s | q5_k_m | q6_k | iq4_nl | iq4_xs | iq3_m | iq3_xxs | iq2_m | "
                   "iq2_xs (iq2_*: with --imatrix) (default q4_k_m for a dense model; for one medslm quantized with groups of "
                   "32, its own integers as q4_0, q4_1 (asymmetric) or q8_0; quantized with --target q4_k_m, as "
                   "q4_k_m)")
    p.add_argument("--float-type", default="f16", choices=("f16", "q8_0"),
                   help="medslm-quantized models: how the 2-D tensors kept in float (the embedding) are "
                        "stored; q8_0 is llama.cpp's rounding of them (default f16)")
    p.add_argument("--tensor-type", action="append", default=[], metavar="PATTERN=TYPE",
                   help="a dense model quantized by llama.cpp: tensors whose GGUF name matches the regular "
                        "expression PATTERN get TYPE (llama-quantize's --tensor-type; repeatable, the first "
                        "match wins), e.g. 'ffn_down=q8_0' or 'token_embd=q5_0'")
    p.add_argument("--imatrix", default=None, metavar="CALIBRATION|FILE",
                   help="a dense model quantized by llama.cpp: weigh its rounding by an importance matrix (mean "
                        "squared input per column, as llama-imatrix) computed on these calibration texts, e.g. "
                        "pubmedqa:fit@50,medquad (the specs of medslm quantize --calibration), or read from the "
                        ".gguf or .dat file llama-imatrix wrote")
    p.add_argument("--imatrix-samples", type=int, default=None, help="calibration texts of --imatrix (default 64)")
    p.add_argument("--save-imatrix", default=None, metavar="FILE.gguf",
                   help="also save the matrix computed from --imatrix CALIBRATION in llama-imatrix's GGUF format "
                        "(for llama-quantize --imatrix, or a later --imatrix FILE)")
    p.add_argument("--threads", type=threads_arg, default=None, help="quantizer threads (default: free cores)")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(handler=cmd_export)


def cmd_export(args) -> int:
    import json

    if args.format == "compressed-tensors":
        from medslm.errors import ConfigError
        from medslm.export.compressed_tensors import export_compressed_tensors
        from medslm.models.loading import resolve

        if (args.type or args.overwrite or args.tensor_type or args.imatrix or args.imatrix_samples is not None
                or args.save_imatrix):
            raise ConfigError("--format compressed-tensors writes the artifact's own integers: --type, "
                              "--tensor-type, --imatrix(-samples), --save-imatrix and --overwrite apply to GGUF only")
        out = export_compressed_tensors(resolve(args.model).artifact(), args.out)
        side = json.loads((out / "medslm-export.json").read_text())
        size = sum(f.stat().st_size for f in out.glob("*.safetensors"))
        print(f"wrote {out}: {size:,} bytes of safetensors, {side['layers']} pack-quantized layers (exact: "
              f"{side['exact']}), from {side['source']} ({side['chain']})")
        return 0

    from medslm.export.gguf import export_gguf, sidecar
    from medslm.export.llama_quantize import parse_tensor_types

    out = export_gguf(args.model, args.out, args.type, threads=args.threads, overwrite=args.overwrite,
                      float_type=args.float_type, tensor_types=parse_tensor_types(args.tensor_type),
                      imatrix=args.imatrix, imatrix_samples=args.imatrix_samples, save_imatrix=args.save_imatrix)
    side = json.loads(sidecar(out).read_text())
    print(f"wrote {out}: {side['bytes']:,} bytes, {side['type']}, from {side['source']} "
          f"({side['chain']}), sha256 {side['sha256'][:16]}")
    return 0
