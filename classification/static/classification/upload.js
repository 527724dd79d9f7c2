// The upload page: pick, drop or paste an image (or its address) and classify it through
// POST /classify-image, the same API clients use. No dependencies; modern browsers only.
(() => {
  "use strict";

  const form = document.getElementById("classify-form");
  if (!form) return;

  const $ = (id) => document.getElementById(id);
  const fileInput = $("image-file");
  const urlInput = $("image-url");
  const modelChoice = $("model-choice"); // only when several models are in production
  const labelsField = $("labels-field"); // only when a production model is zero-shot
  const labelsInput = $("labels");
  const dropzone = $("dropzone");
  const errorBox = $("intake-error");
  const outcome = $("outcome");
  const statusLine = $("status");
  const preview = $("preview");
  const previewImage = $("preview-image");
  const previewCaption = $("preview-caption");
  const resultBox = $("result");
  const historySection = $("history-section");
  const historyList = $("history");
  const sentLine = $("sent-size");

  const classifyUrl = form.dataset.classifyUrl;
  const topK = Number(form.dataset.topK) || 5;
  const maxBytes = Number(form.dataset.maxBytes) || Infinity;
  const HISTORY_LIMIT = 12;

  // Sentences for a person, by the API's error code. The server's own message is shown
  // beneath when it adds something (a limit, a status).
  const ERROR_SENTENCES = {
    payload_too_large: "This image is too large for the service. Try a smaller or more compressed version.",
    image_too_large: "This image is too large for the service. Try a smaller or more compressed version.",
    image_too_many_pixels: "This image has too many pixels for the service. Try a smaller version.",
    unsupported_image_type: "This file is not an image the service can read. Use a JPEG, PNG, GIF or WebP image.",
    undecodable_image: "This image could not be read; the file may be damaged or incomplete.",
    empty_image: "This file is empty. Choose another image.",
    url_unreachable: "The image address could not be reached. Check that it is right and public.",
    upstream_error: "The site at that address answered with an error instead of an image.",
    upstream_timeout: "The site at that address took too long to send the image.",
    throttled: "Too many images in a short time. Wait a moment and try again.",
    model_not_ready: "The classifier is not ready yet. Try again in a minute.",
    invalid_url: "That does not look like an image address. It should start with http:// or https://.",
  };

  // Codes whose server message adds a fact (a limit, an upstream status, a wait) to the sentence.
  const DETAIL_HELPS = new Set([
    "payload_too_large", "image_too_large", "image_too_many_pixels", "upstream_error", "throttled",
  ]);

  let current = null; // {controller, id}
  let sequence = 0;

  // ---- the csrf token: from the form (works even with an HttpOnly cookie), else the cookie.
  function csrfToken() {
    const field = form.querySelector("input[name=csrfmiddlewaretoken]");
    if (field && field.value) return field.value;
    const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return match ? decodeURIComponent(match[1]) : "";
  }

  // ---- formatting
  const percent = (value) => `${(Math.max(0, Math.min(1, value)) * 100).toFixed(1)}%`;
  const humanLabel = (label) => String(label).replace(/_/g, " ");
  function duration(seconds) {
    if (typeof seconds !== "number" || !isFinite(seconds)) return "";
    return seconds < 1 ? `${Math.max(1, Math.round(seconds * 1000))} ms` : `${seconds.toFixed(2)} s`;
  }
  function bytes(n) {
    if (n >= 1024 * 1024) return `${(n / (1024 * 1024)).toFixed(1)} MB`;
    if (n >= 1024) return `${Math.round(n / 1024)} KB`;
    return `${n} bytes`;
  }

  // ---- states
  const narrow = window.matchMedia("(max-width: 50rem)");
  const motion = window.matchMedia("(prefers-reduced-motion: reduce)");
  // On a phone the result is below the fold: bring what changed into view.
  function reveal(element, block) {
    if (narrow.matches) element.scrollIntoView({ block, behavior: motion.matches ? "auto" : "smooth" });
  }

  function showError(sentence, detail) {
    errorBox.textContent = "";
    const main = document.createElement("span");
    main.textContent = sentence;
    errorBox.append(main);
    if (detail && detail !== sentence) {
      const extra = document.createElement("span");
      extra.className = "error__detail";
      extra.textContent = ` ${detail}`;
      errorBox.append(extra);
    }
    errorBox.hidden = false;
    form.classList.add("has-error");
    reveal(errorBox, "nearest");
  }
  function clearError() {
    errorBox.hidden = true;
    errorBox.textContent = "";
    form.classList.remove("has-error");
  }
  function setBusy(busy) {
    outcome.setAttribute("aria-busy", String(busy));
    outcome.classList.toggle("is-busy", busy);
    form.classList.toggle("is-busy", busy);
  }
  // What was sent, beside the file as chosen: "Sent 683 x 512, 92 KB (from 4032 x 3024, 3.9 MB)".
  function sentText(upload) {
    const size = (part) => (part.width ? `${part.width} x ${part.height}, ` : "") + bytes(part.bytes);
    if (!upload) return "";
    if (!upload.resized) return `Sent as chosen: ${size(upload.original)}`;
    return `Sent ${size(upload.sent)} (from ${size(upload.original)})`;
  }
  function showSent(text) {
    sentLine.textContent = text || "";
    sentLine.hidden = !text;
  }

  function showPreview(src, caption) {
    if (!src) {
      preview.hidden = true;
      return;
    }
    previewImage.onerror = () => { preview.hidden = true; };
    previewImage.src = src;
    previewCaption.textContent = caption;
    preview.hidden = false;
  }

  // A multi-task model's tags: one chip each, present ones highlighted.
  function renderTags(tags) {
    const chips = $("result-tags");
    chips.textContent = "";
    chips.hidden = !tags;
    (tags || []).forEach((tag) => {
      const chip = document.createElement("li");
      chip.className = tag.present ? "chip chip--present" : "chip";
      chip.textContent = `${humanLabel(tag.label)} ${percent(tag.probability)}`;
      chip.title = tag.present ? "Present" : "Not present";
      chips.append(chip);
    });
  }

  // The answer shown (a new one, or one chosen again from the history), for the "Right?"
  // control below it (feedback.js): its request id, the bytes sent and the labels sent.
  function announceAnswer(entry) {
    outcome.dispatchEvent(new CustomEvent("classify:answer", { detail: entry }));
  }

  function renderResult(entry) {
    const data = entry.data;
    const predictions = Array.isArray(data.predictions) ? data.predictions : [];
    $("result-label").textContent = humanLabel(data.classification);
    $("result-confidence").textContent = percent(data.confidence);
    const bars = $("result-bars");
    bars.textContent = "";
    predictions.forEach((prediction, index) => {
      const item = document.createElement("li");
      item.className = index === 0 ? "bar bar--top" : "bar";
      const label = document.createElement("span");
      label.className = "bar__label";
      label.textContent = humanLabel(prediction.label);
      const value = document.createElement("span");
      value.className = "bar__value";
      value.textContent = percent(prediction.confidence);
      const track = document.createElement("span");
      track.className = "bar__track";
      track.setAttribute("aria-hidden", "true");
      const fill = document.createElement("span");
      fill.className = "bar__fill";
      fill.style.width = percent(prediction.confidence);
      track.append(fill);
      item.append(label, value, track);
      bars.append(item);
    });
    renderTags(Array.isArray(data.tags) ? data.tags : null);
    const model = data.model || {};
    $("result-model").textContent = model.name ? `Model ${model.name} v${model.version}` : "";
    $("result-time").textContent = data.processing_time != null ? `Processed in ${duration(data.processing_time)}` : "";
    $("result-cached").hidden = data.cached !== true;
    resultBox.hidden = false;
    statusLine.classList.add("visually-hidden");
    statusLine.textContent =
      `Best match: ${humanLabel(data.classification)}, ${percent(data.confidence)}` +
      (data.cached === true ? " (from cache)." : ".");
    announceAnswer(entry);
  }

  // ---- history: thumbnails with their top label; choosing one shows its result again.
  function addToHistory(entry) {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "history__item";
    const thumb = document.createElement("img");
    thumb.alt = "";
    thumb.referrerPolicy = "no-referrer";
    thumb.loading = "lazy";
    thumb.src = entry.thumbnail;
    thumb.onerror = () => thumb.classList.add("is-broken");
    const text = document.createElement("span");
    text.className = "history__label";
    text.textContent = humanLabel(entry.data.classification);
    const value = document.createElement("span");
    value.className = "history__value";
    value.textContent = percent(entry.data.confidence) + (entry.data.cached === true ? " · cached" : "");
    button.append(thumb, text, value);
    button.setAttribute("aria-label",
      `${entry.name}: ${humanLabel(entry.data.classification)}, ${percent(entry.data.confidence)}. Show this result.`);
    button.addEventListener("click", () => {
      clearError();
      showPreview(entry.thumbnail, entry.name);
      showSent(entry.sent);
      renderResult(entry);
    });
    item.append(button);
    historyList.prepend(item);
    while (historyList.children.length > HISTORY_LIMIT) {
      const last = historyList.lastElementChild;
      const img = last.querySelector("img");
      if (img && img.src.startsWith("blob:")) URL.revokeObjectURL(img.src);
      last.remove();
    }
    historySection.hidden = false;
  }

  // ---- talking to the API
  async function readError(response) {
    let code = "";
    let message = "";
    try {
      const body = await response.json();
      if (body && body.error) {
        code = String(body.error.code || "");
        message = String(body.error.message || "");
      }
    } catch (_) {
      // Not JSON (a proxy's error page, say): fall back to the status below.
    }
    if (ERROR_SENTENCES[code]) {
      return { sentence: ERROR_SENTENCES[code], detail: DETAIL_HELPS.has(code) ? message : "" };
    }
    if (response.status === 413) return { sentence: ERROR_SENTENCES.payload_too_large, detail: message };
    if (response.status === 429) return { sentence: ERROR_SENTENCES.throttled, detail: message };
    if (message) return { sentence: message, detail: "" };
    if (response.status >= 500) {
      return { sentence: `The service had a problem (error ${response.status}). Try again in a moment.`, detail: "" };
    }
    return { sentence: `The image could not be classified (error ${response.status}).`, detail: "" };
  }

  async function classify({ body, isJson, thumbnail, name, sent, image, labels }) {
    if (current) current.controller.abort();
    const controller = new AbortController();
    const id = ++sequence;
    current = { controller, id };

    clearError();
    resultBox.hidden = true;
    outcome.dispatchEvent(new CustomEvent("classify:start"));
    statusLine.classList.remove("visually-hidden");
    showPreview(thumbnail, name);
    showSent(sent);
    statusLine.textContent = `Classifying ${name}…`;
    setBusy(true);

    const headers = { "X-CSRFToken": csrfToken(), Accept: "application/json" };
    if (isJson) headers["Content-Type"] = "application/json";
    try {
      const response = await fetch(classifyUrl, {
        method: "POST",
        body,
        headers,
        credentials: "same-origin",
        signal: controller.signal,
      });
      if (!response.ok) {
        const { sentence, detail } = await readError(response);
        if (id !== sequence) return;
        showError(sentence, detail);
        statusLine.textContent = "No result for this image.";
        return;
      }
      const data = await response.json();
      if (id !== sequence) return;
      // The request id names this answer to POST /feedback.
      const entry = { data, thumbnail, name, sent, image, labels, requestId: response.headers.get("X-Request-ID") };
      renderResult(entry);
      addToHistory(entry);
      reveal(outcome, "start");
    } catch (error) {
      if (error && error.name === "AbortError") return;
      if (id !== sequence) return;
      showError("The service could not be reached. Check your connection and try again.");
      statusLine.textContent = "No result for this image.";
    } finally {
      if (id === sequence) {
        setBusy(false);
        current = null;
      }
    }
  }

  // A zero-shot model's labels, one per line; null (the model's own labels) when none given.
  function chosenLabels() {
    if (!labelsField || labelsField.hidden) return null;
    const labels = labelsInput.value.split("\n").map((line) => line.trim()).filter(Boolean);
    return labels.length ? labels : null;
  }

  function showLabelsFor() {
    if (!labelsField || !modelChoice) return;
    const option = modelChoice.options[modelChoice.selectedIndex];
    labelsField.hidden = !option || option.dataset.kind !== "zero_shot";
  }

  if (modelChoice) {
    modelChoice.addEventListener("change", showLabelsFor);
    showLabelsFor();
  }

  // ---- what is sent: a photo larger than the chosen model can use is resized here first.
  // The model sees a few hundred pixels of a 12-megapixel photo: sending those (with a margin)
  // saves most of the upload and keeps the answer (docs/upload-page.md, "What is sent").
  const RESIZE_MARGIN = 2; // shorter side kept >= 2 x what the model sees (the server's JPEG_DRAFT_MARGIN)
  const JPEG_QUALITY = 0.9;

  // The shorter side the chosen model can use, from its input size and crop (0: unknown).
  function neededSide() {
    const source = modelChoice ? modelChoice.options[modelChoice.selectedIndex] : form;
    const size = Number(source && source.dataset.inputSize);
    const crop = Number(source && source.dataset.crop) || 1;
    if (!(size > 0) || !(crop > 0 && crop <= 1)) return 0;
    return Math.ceil(RESIZE_MARGIN * size / crop - 1e-9);
  }

  // Only JPEG and opaque PNG are re-encoded: a GIF's or WebP's bytes (animation, lossless) and
  // a PNG's transparency (the server reads the colours under it; a canvas loses them) are kept.
  async function resizable(file) {
    const head = new Uint8Array(await file.slice(0, 26).arrayBuffer());
    if (head[0] === 0xff && head[1] === 0xd8 && head[2] === 0xff) return true;
    const png = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a].every((b, i) => head[i] === b);
    return png && (head[25] === 0 || head[25] === 2); // IHDR colour type: grey or RGB, no alpha
  }

  function canvasOf(width, height) {
    if (typeof OffscreenCanvas === "function") return new OffscreenCanvas(width, height);
    const canvas = document.createElement("canvas");
    canvas.width = width;
    canvas.height = height;
    return canvas;
  }

  function drawn(source, width, height) {
    const canvas = canvasOf(width, height);
    const context = canvas.getContext("2d");
    context.imageSmoothingEnabled = true;
    context.imageSmoothingQuality = "high";
    context.drawImage(source, 0, 0, width, height);
    return canvas;
  }

  // Halved while more than twice the target (each step averages 2 x 2 pixels, so no aliasing
  // whatever the browser's "high" smoothing is), then drawn at the target size.
  function downscaled(bitmap, width, height) {
    let source = bitmap;
    let w = bitmap.width;
    let h = bitmap.height;
    while (w >= 2 * width && h >= 2 * height) {
      w = Math.ceil(w / 2);
      h = Math.ceil(h / 2);
      source = drawn(source, w, h);
    }
    return drawn(source, width, height);
  }

  function jpegOf(canvas) {
    if (typeof canvas.convertToBlob === "function") {
      return canvas.convertToBlob({ type: "image/jpeg", quality: JPEG_QUALITY });
    }
    return new Promise((resolve, reject) => {
      canvas.toBlob((blob) => (blob ? resolve(blob) : reject(new Error("no JPEG"))), "image/jpeg", JPEG_QUALITY);
    });
  }

  // {blob, resized, original: {bytes, width, height}, sent}: the file itself when it is small
  // enough, not a JPEG or PNG, or when anything fails here (an old browser, a decode error:
  // the server then says what is wrong with it).
  async function prepareUpload(file) {
    const original = { bytes: file.size, width: 0, height: 0 };
    const asChosen = () => ({ blob: file, resized: false, original, sent: original });
    const needed = neededSide();
    if (!needed || typeof createImageBitmap !== "function") return asChosen();
    let bitmap = null;
    try {
      if (!(await resizable(file))) return asChosen();
      // Upright first: the EXIF orientation is applied while decoding (a canvas keeps no EXIF).
      bitmap = await createImageBitmap(file, { imageOrientation: "from-image" });
      original.width = bitmap.width;
      original.height = bitmap.height;
      const shorter = Math.min(bitmap.width, bitmap.height);
      if (shorter <= needed) return asChosen();
      const scale = needed / shorter;
      const width = bitmap.width === shorter ? needed : Math.round(bitmap.width * scale);
      const height = bitmap.height === shorter ? needed : Math.round(bitmap.height * scale);
      const blob = await jpegOf(downscaled(bitmap, width, height));
      if (!blob || blob.size >= file.size) return asChosen();
      return { blob, resized: true, original, sent: { bytes: blob.size, width, height } };
    } catch (_) {
      return asChosen();
    } finally {
      if (bitmap) bitmap.close();
    }
  }

  let preparing = 0;

  async function classifyFile(file) {
    if (!file) return;
    const ticket = ++preparing;
    const name = file.name || "the pasted image";
    clearError();
    statusLine.classList.remove("visually-hidden");
    statusLine.textContent = `Preparing ${name}…`;
    const upload = await prepareUpload(file);
    if (ticket !== preparing) return; // another image was chosen meanwhile
    // The limit is the server's: what counts is what is sent, not the file as chosen.
    if (upload.blob.size > maxBytes) {
      showError(ERROR_SENTENCES.image_too_large, `This file is ${bytes(upload.blob.size)}; the limit is ${bytes(maxBytes)}.`);
      statusLine.textContent = "No result for this image.";
      return;
    }
    const data = new FormData();
    const filename = upload.resized ? `${(file.name || "pasted-image").replace(/\.[^.]*$/, "")}.jpg` : file.name || "pasted-image";
    data.append("image", upload.blob, filename);
    data.append("top_k", String(topK));
    if (modelChoice) data.append("model", modelChoice.value);
    const labels = chosenLabels();
    for (const label of labels || []) data.append("labels", label);
    classify({
      body: data,
      isJson: false,
      thumbnail: URL.createObjectURL(upload.blob),
      name,
      sent: sentText(upload),
      image: upload.blob, // sent again with feedback, so it can be kept
      labels,
    });
  }

  function classifyAddress(raw) {
    preparing += 1; // a file still being resized is no longer wanted
    const address = String(raw || "").trim();
    if (!address) {
      showError("Paste an image address first, or choose a file.");
      urlInput.focus();
      return;
    }
    let parsed;
    try {
      parsed = new URL(address);
    } catch (_) {
      parsed = null;
    }
    if (!parsed || !/^https?:$/.test(parsed.protocol)) {
      showError(ERROR_SENTENCES.invalid_url);
      urlInput.focus();
      return;
    }
    const labels = chosenLabels();
    classify({
      body: JSON.stringify({
        image_url: address,
        top_k: topK,
        ...(modelChoice ? { model: modelChoice.value } : {}),
        ...(labels ? { labels } : {}),
      }),
      isJson: true,
      thumbnail: address,
      name: address,
      sent: "",
      image: null, // the service fetched it; the page has no bytes to send again
      labels,
    });
  }

  const looksLikeAddress = (text) => /^https?:\/\/\S+$/i.test(String(text || "").trim());
  const firstImage = (files) => Array.from(files || []).find((f) => f.type.startsWith("image/")) ||
    (files && files[0]);

  // ---- wiring
  fileInput.addEventListener("change", () => {
    classifyFile(fileInput.files[0]);
    fileInput.value = ""; // choosing the same file again classifies it again
  });

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    classifyAddress(urlInput.value);
  });

  // Drops anywhere on the page count (a miss would make the browser open the file instead).
  let dragDepth = 0;
  document.addEventListener("dragenter", (event) => {
    if (!event.dataTransfer) return;
    event.preventDefault();
    dragDepth += 1;
    dropzone.classList.add("is-dragover");
  });
  document.addEventListener("dragleave", () => {
    dragDepth = Math.max(0, dragDepth - 1);
    if (dragDepth === 0) dropzone.classList.remove("is-dragover");
  });
  document.addEventListener("dragover", (event) => {
    event.preventDefault();
    if (event.dataTransfer) event.dataTransfer.dropEffect = "copy";
  });
  document.addEventListener("drop", (event) => {
    event.preventDefault();
    dragDepth = 0;
    dropzone.classList.remove("is-dragover");
    const transfer = event.dataTransfer;
    if (!transfer) return;
    if (transfer.files && transfer.files.length) {
      classifyFile(firstImage(transfer.files));
      return;
    }
    const text = transfer.getData("text/uri-list").split(/\r?\n/).find((l) => l && !l.startsWith("#")) ||
      transfer.getData("text/plain");
    if (looksLikeAddress(text)) {
      urlInput.value = text.trim();
      classifyAddress(text);
    }
  });

  // Paste an image (a screenshot, a copied picture) or an address anywhere on the page.
  document.addEventListener("paste", (event) => {
    const clipboard = event.clipboardData;
    if (!clipboard) return;
    const image = Array.from(clipboard.files || []).find((f) => f.type.startsWith("image/"));
    if (image) {
      event.preventDefault();
      classifyFile(image);
      return;
    }
    if (event.target === urlInput) return; // pasting into the field: let it, then Classify
    const text = clipboard.getData("text/plain");
    if (looksLikeAddress(text)) {
      event.preventDefault();
      urlInput.value = text.trim();
      classifyAddress(text);
    }
  });

  urlInput.addEventListener("input", () => {
    if (!errorBox.hidden) clearError();
  });
})();
