// "Right?" under each answer of the upload page: the person says the answer was right, or picks
// the right label (for a multi-task model the category and its tags; for a zero-shot model one of
// the labels the request sent), and the page sends it to POST /feedback with the image it sent.
// upload.js announces each answer shown with a "classify:answer" event on #outcome.
(() => {
  "use strict";

  const root = document.getElementById("feedback");
  const outcome = document.getElementById("outcome");
  if (!root || !outcome) return;

  const $ = (id) => document.getElementById(id);
  const yesButton = $("feedback-yes");
  const noButton = $("feedback-no");
  const correction = $("feedback-correction");
  const input = $("feedback-label");
  const listbox = $("feedback-options");
  const hint = $("feedback-label-hint");
  const tagsField = $("feedback-tags");
  const tagList = $("feedback-tag-list");
  const cancelButton = $("feedback-cancel");
  const statusLine = $("feedback-status");
  const privacy = $("feedback-privacy");
  const PRIVACY = privacy.textContent;
  const feedbackUrl = root.dataset.feedbackUrl;
  const modelsUrl = root.dataset.modelsUrl;
  const HINT = hint.textContent;
  const MAX_OPTIONS = 50; // a 1000-label model: the first 50 matches, and a count of the rest
  // The request log is written off the request thread, in bulk, by the worker that answered:
  // feedback reaching another worker at once may find no row yet, so it is tried once more.
  const RETRY_NOT_FOUND_MS = 1000;

  let answer = null; // the entry upload.js announced: {data, requestId, image, labels, ...}
  let choices = []; // the labels the person may pick from
  let matches = []; // those the listbox shows
  let active = -1; // index in matches of the highlighted option
  let generation = 0; // bumped by each answer: replies about an earlier one are ignored
  let sending = false;
  let catalogue = null; // GET /models, fetched once when a list is first needed

  const humanLabel = (label) => String(label).replace(/_/g, " ");
  const normal = (text) => humanLabel(text).trim().toLowerCase();
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  function csrfToken() {
    const field = document.querySelector("input[name=csrfmiddlewaretoken]");
    if (field && field.value) return field.value;
    const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return match ? decodeURIComponent(match[1]) : "";
  }

  function say(text, kind) {
    statusLine.textContent = text;
    statusLine.classList.toggle("feedback__status--ok", kind === "ok");
    statusLine.classList.toggle("feedback__status--error", kind === "error");
  }

  // ---- the labels of the answering model version
  async function modelLabels(name, version) {
    const find = (models) => {
      const model = (models || []).find((entry) => entry.name === name);
      const found = model && (model.versions || []).find((entry) => entry.version === version);
      return found && Array.isArray(found.labels) ? found.labels : null;
    };
    const load = () => fetch(modelsUrl, { headers: { Accept: "application/json" }, credentials: "same-origin" })
      .then((response) => (response.ok ? response.json() : Promise.reject(new Error(String(response.status)))));
    if (!catalogue) catalogue = load();
    try {
      let labels = find(await catalogue);
      if (!labels) {
        catalogue = load(); // registered since the page fetched the list
        labels = find(await catalogue);
      }
      return labels;
    } catch (_) {
      catalogue = null;
      return null;
    }
  }

  async function labelsFor(entry) {
    if (entry.labels && entry.labels.length) return entry.labels; // a zero-shot request's own
    const model = entry.data.model || {};
    const labels = await modelLabels(model.name, model.version);
    // Should the list be out of reach, the answer's own predictions are labels of the model too.
    return labels || (entry.data.predictions || []).map((prediction) => prediction.label);
  }

  // ---- the combobox: type to filter, Arrow keys to move, Enter to pick, Escape to close
  function optionId(index) {
    return `feedback-option-${index}`;
  }

  function filtered(query) {
    const wanted = normal(query);
    if (!wanted) return choices.slice();
    const starts = [];
    const contains = [];
    for (const label of choices) {
      const text = normal(label);
      if (text.startsWith(wanted)) starts.push(label);
      else if (text.includes(wanted)) contains.push(label);
    }
    return starts.concat(contains);
  }

  function openList() {
    const all = filtered(input.value);
    matches = all.slice(0, MAX_OPTIONS);
    active = -1;
    listbox.textContent = "";
    matches.forEach((label, index) => {
      const option = document.createElement("li");
      option.id = optionId(index);
      option.className = "combobox__option";
      option.setAttribute("role", "option");
      option.setAttribute("aria-selected", "false");
      option.textContent = humanLabel(label);
      // mousedown, not click: the input keeps the focus (and the list stays until the pick).
      option.addEventListener("mousedown", (event) => {
        event.preventDefault();
        pick(index);
      });
      listbox.append(option);
    });
    if (!all.length) {
      hint.textContent = "No label matches. Try fewer letters.";
    } else if (all.length > matches.length) {
      hint.textContent = `${matches.length} of ${all.length} labels shown: type more to narrow them.`;
    } else {
      hint.textContent = `${all.length} ${all.length === 1 ? "label matches" : "labels match"}: Arrow keys and Enter to pick.`;
    }
    listbox.hidden = !matches.length;
    input.setAttribute("aria-expanded", String(!listbox.hidden));
    input.removeAttribute("aria-activedescendant");
  }

  function closeList() {
    listbox.hidden = true;
    active = -1;
    input.setAttribute("aria-expanded", "false");
    input.removeAttribute("aria-activedescendant");
  }

  function highlight(index) {
    if (!matches.length) return;
    active = (index + matches.length) % matches.length;
    Array.from(listbox.children).forEach((option, i) => {
      option.setAttribute("aria-selected", String(i === active));
      option.classList.toggle("is-active", i === active);
    });
    const option = $(optionId(active));
    input.setAttribute("aria-activedescendant", option.id);
    option.scrollIntoView({ block: "nearest" });
  }

  function pick(index) {
    const label = matches[index];
    if (label === undefined) return;
    input.value = humanLabel(label);
    input.dataset.label = label;
    closeList();
    hint.textContent = `Picked ${humanLabel(label)}. Press Enter or Send.`;
  }

  // The label typed or picked, when it is one of the choices (case and underscores aside).
  function chosenLabel() {
    if (input.dataset.label && humanLabel(input.dataset.label) === input.value) return input.dataset.label;
    const typed = normal(input.value);
    return choices.find((label) => normal(label) === typed) || null;
  }

  input.addEventListener("input", () => {
    delete input.dataset.label;
    openList();
  });
  input.addEventListener("click", () => {
    if (listbox.hidden) openList();
  });
  input.addEventListener("blur", closeList);
  input.addEventListener("keydown", (event) => {
    const open = !listbox.hidden;
    if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      event.preventDefault();
      if (!open) openList();
      const step = event.key === "ArrowDown" ? 1 : -1;
      highlight(active < 0 ? (step > 0 ? 0 : matches.length - 1) : active + step);
    } else if (event.key === "Enter" && open) {
      // Enter picks; with the list closed it sends the form.
      event.preventDefault();
      if (active >= 0) pick(active);
      else if (matches.length === 1) pick(0);
    } else if (event.key === "Escape") {
      if (open) {
        event.preventDefault();
        closeList();
      } else if (input.value) {
        event.preventDefault();
        input.value = "";
        delete input.dataset.label;
        hint.textContent = HINT;
      }
    }
  });

  // ---- a multi-task model's tags: one toggle each, set as the answer had them
  function renderTags(tags) {
    tagList.textContent = "";
    tagsField.hidden = !tags;
    (tags || []).forEach((tag, index) => {
      const toggle = document.createElement("label");
      toggle.className = "toggle";
      const box = document.createElement("input");
      box.type = "checkbox";
      box.value = tag.label;
      box.checked = tag.present === true;
      box.id = `feedback-tag-${index}`;
      toggle.append(box, document.createTextNode(` ${humanLabel(tag.label)}`));
      tagList.append(toggle);
    });
  }

  const answeredTags = () => (Array.isArray(answer.data.tags) ? answer.data.tags : null);
  const presentTags = () => answeredTags().filter((tag) => tag.present === true).map((tag) => tag.label);
  const toggledTags = () => Array.from(tagList.querySelectorAll("input:checked"), (box) => box.value);

  // ---- the panel
  async function openCorrection() {
    if (!answer) return;
    const mine = generation;
    noButton.setAttribute("aria-expanded", "true");
    correction.hidden = false;
    renderTags(answeredTags());
    input.value = "";
    delete input.dataset.label;
    hint.textContent = "Loading the labels…";
    input.focus();
    const labels = await answer.choices;
    if (mine !== generation) return;
    choices = labels;
    hint.textContent = HINT;
    if (document.activeElement === input) openList();
  }

  function closeCorrection({ focus } = {}) {
    closeList();
    correction.hidden = true;
    noButton.setAttribute("aria-expanded", "false");
    if (focus) noButton.focus();
  }

  function reset(entry) {
    generation += 1;
    answer = entry || null;
    sending = false;
    root.removeAttribute("aria-busy");
    closeCorrection();
    say(answer && answer.feedbackSaid ? answer.feedbackSaid : "", answer && answer.feedbackSaid ? "ok" : "");
    // An answer without a request id (an old proxy dropping the header) cannot be named.
    root.hidden = !(answer && answer.requestId);
    // An image address leaves no bytes on the page: its feedback goes without an image.
    privacy.textContent = answer && !answer.image ? "Your answer helps improve the model." : PRIVACY;
    choices = [];
    // Fetched now, so the list is ready when "No" is chosen.
    if (!root.hidden && !answer.choices) answer.choices = labelsFor(answer);
  }

  // ---- sending
  // JSON, with the image as base64: a multipart form cannot say "no tags" (an empty list).
  function dataUrl(blob) {
    return new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve(reader.result);
      reader.onerror = () => reject(reader.error);
      reader.readAsDataURL(blob);
    });
  }

  async function post(fields, image) {
    const body = image ? { ...fields, image_base64: await dataUrl(image) } : fields;
    const response = await fetch(feedbackUrl, {
      method: "POST",
      body: JSON.stringify(body),
      headers: { "X-CSRFToken": csrfToken(), Accept: "application/json", "Content-Type": "application/json" },
      credentials: "same-origin",
    });
    let error = null;
    if (!response.ok) {
      error = { code: "", message: "" };
      try {
        const reply = await response.json();
        if (reply && reply.error) error = { code: String(reply.error.code || ""), message: String(reply.error.message || "") };
      } catch (_) {
        // Not JSON (a proxy's page): the status says enough below.
      }
    }
    return { response, error };
  }

  async function send(fields, thanks) {
    if (sending || !answer) return false;
    const mine = generation;
    const entry = answer;
    sending = true;
    root.setAttribute("aria-busy", "true");
    say("Sending…", "");
    try {
      let { response, error } = await post(fields, entry.image);
      if (error && error.code === "request_not_found") {
        await sleep(RETRY_NOT_FOUND_MS);
        if (mine !== generation) return false;
        ({ response, error } = await post(fields, entry.image));
      }
      if (mine !== generation) return false;
      if (error) {
        say(error.message || `The feedback could not be sent (error ${response.status}).`, "error");
        return false;
      }
      entry.feedbackSaid = thanks; // shown again when this answer is chosen from the history
      say(thanks, "ok");
      return true;
    } catch (_) {
      if (mine === generation) say("The service could not be reached. Try again in a moment.", "error");
      return false;
    } finally {
      if (mine === generation) {
        sending = false;
        root.removeAttribute("aria-busy");
      }
    }
  }

  yesButton.addEventListener("click", () => {
    if (!answer) return;
    closeCorrection();
    const fields = { request_id: answer.requestId, correct: true };
    if (answeredTags()) fields.tags = presentTags();
    send(fields, `Thanks! You said ${humanLabel(answer.data.classification)} is right.`);
  });

  noButton.addEventListener("click", () => {
    if (correction.hidden) openCorrection();
    else closeCorrection({ focus: true });
  });

  cancelButton.addEventListener("click", () => closeCorrection({ focus: true }));

  correction.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && event.target !== input) closeCorrection({ focus: true });
  });

  correction.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!answer) return;
    const label = chosenLabel();
    if (!label) {
      say(choices.length ? "Pick a label from the list." : "The labels are still loading.", "error");
      input.focus();
      return;
    }
    const tags = answeredTags() ? toggledTags() : null;
    // A multi-task answer may have the right category and wrong tags: then it was right.
    const right = label === answer.data.classification;
    const fields = { request_id: answer.requestId, correct: right };
    if (!right) fields.label = label;
    if (tags) fields.tags = tags;
    const thanks = right
      ? `Thanks! You said ${humanLabel(label)} is right${tags ? ", with your tags" : ""}.`
      : `Thanks! You said it is ${humanLabel(label)}.`;
    if (await send(fields, thanks)) closeCorrection({ focus: true });
  });

  outcome.addEventListener("classify:start", () => reset(null));
  outcome.addEventListener("classify:answer", (event) => reset(event.detail));
  reset(null);
})();
