"""Scripted evaluation of edits (``ids-eval``): CLIP, LPIPS, background PSNR, IoU and depth change, exactly defined.

Modules: ``clip_metrics`` (CLIP embeddings and the CLIP metrics), ``identity`` (LPIPS, background PSNR, IoU,
depth change), ``sources`` (image folders; renders of nerfstudio runs, each with its own checkpoint), ``report`` (JSON,
Markdown, contact sheet, video, comparison table) and ``cli``. This package imports nothing.

Metric definitions (the text below is what ``ids-eval --help`` prints):

  Notation. Views i = 1..n in camera order (render mode) or natural file-name order (images mode). s_i = the source
  view (a render of --source-config, else the original photo / source image), e_i = the edited view, RGB in [0, 1];
  an edit of another size is resized (bicubic) to the source's size. E_I(x): CLIP image embedding of x with
  open_clip's own preprocessing (short side resized to the model's input size, bicubic; centre crop; CLIP mean/std).
  E_T(p): CLIP text embedding of prompt p. n(v) = v / ||v||_2. cos(a, b) = a.b / (||a|| ||b||), defined as 0 when a
  or b is the zero vector (e.g. a difference of identical embeddings). src / trg = --src-prompt / --trg-prompt.

  clip_text        = cos(n(E_I(e_i)), n(E_T(trg))). Plain cosine in [-1, 1], as in IDS Table 3 (values ~0.16).
                     NOT a CLIPScore: Hessel et al.'s CLIP-S = 2.5 max(cos, 0); torchmetrics' CLIPScore =
                     100 max(cos, 0). Neither the x100/x2.5 scale nor the clamp at 0 is applied.
  clip_direction   = cos(n(E_I(e_i)) - n(E_I(s_i)), n(E_T(trg)) - n(E_T(src))): CLIP text-image direction
                     similarity (StyleGAN-NADA, InstructPix2Pix, instruct-nerf2nerf); every embedding is
                     L2-normalised BEFORE the difference. 0 when e_i = s_i.
  clip_image       = cos(n(E_I(s_i)), n(E_I(e_i))): CLIP image-image similarity of source and edit.
  clip_consistency = cos(n(E_I(s_{i+1})) - n(E_I(s_i)), n(E_I(e_{i+1})) - n(E_I(e_i))) for neighbouring views
                     (n - 1 pairs): instruct-nerf2nerf's "CLIP direction consistency" as its authors clarified it
                     (the change between neighbouring edited views follows the change between the source views).
  clip_edit_consistency = cos(n(E_I(e_i)) - n(E_I(s_i)), n(E_I(e_{i+1})) - n(E_I(s_{i+1}))) for neighbouring
                     views: the edit moves neighbouring views in the same CLIP direction.
  lpips            = LPIPS(s_i, e_i): the ``lpips`` package (v0.1 linear heads, --lpips-net alex by default),
                     inputs scaled to [-1, 1], spatially averaged. Views whose short side is below 64 px are
                     bilinearly upsampled to a 64 px short side first (AlexNet needs the size).
  bg_psnr          IDS supplementary D. Residual r = mean over RGB of (e_i - s_i), an H x W map. sigma(p) = standard
                     deviation of r over the W x W window (--bg-window, default 30) covering rows y-W/2 .. y+W/2-1
                     and columns x-W/2 .. x+W/2-1 of pixel p = (y, x), clipped at the image border. Background mask
                     M = {p : sigma(p) <= t}, t = mean of sigma over the image (--bg-threshold mean, the default and
                     IDS Table 1) or its lower median (--bg-threshold median). bg_psnr = 10 log10(1 / MSE) with
                     MSE = sum_{p in M, c in RGB} (e_i - s_i)^2 / (3 |M|), the mean over the masked pixels
                     (--bg-psnr-average image divides by 3 H W instead: PSNR(M * s_i, M * e_i) of the masked full
                     images, the paper's formula read literally). Capped at 100 dB (MSE floored at 1e-10), so
                     identical images score 100. bg_fraction = |M| / (H W).
  iou              = |A and B| / |A or B| with A, B the source and edited object masks (--masks-source,
                     --masks-edited; a pixel is foreground when its gray value >= 128 of 255); 1 when both are
                     empty. Higher = the object kept its shape and place.
  depth_change     (render mode with --source-config) = median over p in M of |D_e(p) - D_s(p)|: D = the model's
                     "depth" output (nerfacto: median termination distance along the ray) divided by the run's
                     dataparser scale (units of the original camera poses); M = the bg_psnr mask of the view (where
                     the appearance did not change, the geometry should not move either). depth_change_all = the
                     same median over all pixels.
  Means: arithmetic means over views (over the n - 1 neighbouring pairs for the consistency metrics), skipping
  nulls. A metric that could not be computed is null, with the reason under "unavailable" in metrics.json.
"""
