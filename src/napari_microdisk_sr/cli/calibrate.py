"""``microdisk-sr calibrate``: fit the degradation of the user's microscope and write it as a profile JSON."""

import argparse
from pathlib import Path

from ..core import io
from ..core.calibrate import calibrate, write_profile
from ..core.errors import InputError, OutputError
from ..core.intensity import RANGE, Intensity
from .upscale import add_intensity_option


def add_parser(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    parser = subparsers.add_parser(
        "calibrate",
        help="fit the degradation of your microscope (PSF, gain/offset, noise) to train with",
        description=(
            "Fit how your microscope degrades a high-resolution image into its low-resolution one, and write "
            "it as a profile (JSON) for 'microdisk-sr finetune --degradation PROFILE.json'. With --hr, a "
            "high-resolution image of the same field registered onto the LR's x4 grid (as 'microdisk-sr "
            "register' writes it), the Gaussian PSF (sigma in HR pixels), the down-sampling (area or "
            "bicubic), the camera's gain and offset and the Poisson-Gaussian noise are fitted. With the LR "
            "alone only the noise is (from its flat regions): the PSF is then drawn from the generic range "
            "in training."
        ),
    )
    parser.add_argument("lr", type=Path, metavar="LR", help="the low-resolution acquisition")
    parser.add_argument(
        "--hr",
        type=Path,
        metavar="HR",
        help="a high-resolution image of the same field, exactly 4x the LR's size (registered)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="PROFILE.json",
        help="the profile to write (never replaced)",
    )
    add_intensity_option(parser, default="range; the profile records it and fine-tuning follows it")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.out.suffix.lower() != ".json":
        raise InputError(f"--out {args.out} must be a .json file (finetune --degradation takes it)")
    if args.out.exists():
        raise OutputError(f"{args.out} exists; profiles are never replaced: choose another name")
    io.ensure_writable_dir(args.out.parent)
    lr = io.read_image(args.lr).data
    hr = None if args.hr is None else io.read_image(args.hr).data
    profile = calibrate(lr, hr, intensity=Intensity.parse(args.intensity or RANGE))
    path = write_profile(args.out, profile)
    fit = profile.fit
    psf = "not measured" if profile.psf_sigma is None else f"{profile.psf_sigma:.3f} HR px"
    print(f"PSF sigma: {psf}; down-sampling: {profile.downsampling or 'not measured'}")
    print(
        f"gain {profile.gain:.4f}, offset {profile.offset:.4f} (LR = offset + gain x degraded HR, 0-1 units)"
    )
    print(
        f"noise: {profile.photons:.0f} photo-electrons at full scale, read noise {profile.read_noise:.4f} "
        f"(mean-variance R^2 {fit.noise_r2:.3f} over {fit.noise_levels} levels, intensities "
        f"{fit.intensity_range[0]:.2f}-{fit.intensity_range[1]:.2f})"
    )
    if fit.residual_rms is not None:
        print(
            f"residual RMS {fit.residual_rms:.4f} vs {fit.predicted_noise_rms:.4f} predicted by the noise "
            f"model (equal when the optics explain the LR up to its noise)"
        )
    for note in fit.notes:
        print(f"note: {note}")
    print(f"wrote {path}")
    return 0
