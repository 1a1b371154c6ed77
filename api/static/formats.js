// Transcript files built from the Job JSON, exactly as the CLI's writers
// (inference/writers.py) build them: JSON, SRT, WebVTT and plain text.

function clock(secs, sep) {
  let ms = Math.round(Math.max(secs, 0) * 1000);
  const h = Math.floor(ms / 3600000); ms -= h * 3600000;
  const m = Math.floor(ms / 60000); ms -= m * 60000;
  const s = Math.floor(ms / 1000); ms -= s * 1000;
  const p = (n, w) => String(n).padStart(w, "0");
  return `${p(h, 2)}:${p(m, 2)}:${p(s, 2)}${sep}${p(ms, 3)}`;
}

// A blank line ends a cue in SRT and WebVTT; "-->" would start a timing line.
const cueText = (seg) => seg.text.split(/\s+/).filter(Boolean).join(" ").replaceAll("-->", "->");

export function toJson(job) {
  const doc = { language: job.language, duration_secs: job.duration_secs, segments: job.segments };
  return JSON.stringify(doc, null, 2) + "\n";
}

export function toSrt(job) {
  return job.segments
    .map((s, i) => `${i + 1}\n${clock(s.start, ",")} --> ${clock(s.end, ",")}\n${cueText(s)}\n`)
    .join("\n");
}

export function toVtt(job) {
  return "WEBVTT\n\n" + job.segments.map((s) => `${clock(s.start, ".")} --> ${clock(s.end, ".")}\n${cueText(s)}\n`).join("\n");
}

export function toTxt(job) {
  return job.segments.map((s) => s.text.trim() + "\n").join("");
}

export const FORMATS = {
  json: { render: toJson, type: "application/json" },
  srt: { render: toSrt, type: "application/x-subrip" },
  vtt: { render: toVtt, type: "text/vtt" },
  txt: { render: toTxt, type: "text/plain" },
};

/** "12.3 s" / "4:05" for the meta line and word titles. */
export function duration(secs) {
  if (secs == null) return "";
  if (secs < 60) return `${secs.toFixed(1)} s`;
  const m = Math.floor(secs / 60);
  return `${m}:${String(Math.floor(secs - m * 60)).padStart(2, "0")}`;
}
