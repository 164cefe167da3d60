"""Install with ``pip install torch==2.13.0 && pip install -e .`` (pin torch first: see README)."""

from setuptools import find_packages, setup

setup(
    name="huggingface-patch",
    version="0.2.0",
    description="Token-wise decomposition of Hugging Face causal-LM hidden states, and analyses built on it",
    long_description=open("README.md", encoding="utf-8").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["huggingface_patch", "huggingface_patch.*", "analysis", "analysis.*"]),
    py_modules=["run_decompose", "representations_to_deltalp"],
    package_data={"huggingface_patch": ["data/*.json", "data/*.md", "data/*.csv", "data/*.txt", "data/*.sentitems",
                                        "data/byte_tokenizer/*"]},
    install_requires=[
        "torch>=2.1",
        "transformers>=5.24,<6",  # the release CI tests (see huggingface_patch/compat.py)
        "safetensors",
        "accelerate>=1.0",
        "gguf>=0.10",
        "numpy",
        "scipy",
        "scikit-learn",
        "matplotlib",
        "tqdm",
        "pillow",
    ],
    # pinned tools of the test run (.ci/run): the linter, and the browser driver (it drives Debian's chromium)
    # "compare": the peer attribution packages of the faithfulness benchmark (analysis.faithfulness). lxt 2.1 is
    # installed apart with --no-deps (scripts/install.sh): its own requirements would replace the CPU torch with a
    # CUDA build and add open_clip, timm and bitsandbytes, none of which the benchmark uses
    extras_require={"test": ["pytest>=8", "ruff==0.17.6", "playwright==1.65.2"], "compare": ["captum==0.9.0"]},
    entry_points={
        "console_scripts": [
            "hfp-decompose=run_decompose:main",
            "hfp-deltalp=representations_to_deltalp:main",
        ]
    },
)
