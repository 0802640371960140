// A tiny line chart on a <canvas>: a few series over time, gaps where a value is missing, the latest points
// at the right edge. Just enough for the operations page, with no library behind it.

const PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c"];

export class LineChart {
  /**
   * @param {HTMLCanvasElement} canvas
   * @param {{series: string[], format?: (v: number) => string, min?: number, max?: number, capacity?: number}} options
   */
  constructor(canvas, { series, format = (v) => v.toFixed(1), min = 0, max = null, capacity = 120 }) {
    this.canvas = canvas;
    this.series = series;
    this.format = format;
    this.min = min;
    this.max = max;
    this.capacity = capacity;
    this.points = []; // [time, [value per series]]
    this.colors = series.map((_, i) => PALETTE[i % PALETTE.length]);
    new ResizeObserver(() => this.draw()).observe(canvas);
  }

  add(time, values) {
    this.points.push([time, values]);
    if (this.points.length > this.capacity) this.points.shift();
    this.draw();
  }

  draw() {
    const canvas = this.canvas;
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth;
    const height = canvas.clientHeight;
    if (!width || !height) return;
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    const style = getComputedStyle(canvas);
    const ink = style.color || "#666";

    const values = this.points.flatMap(([, vs]) => vs).filter((v) => v !== null && Number.isFinite(v));
    let lo = this.min ?? Math.min(...values);
    let hi = this.max ?? Math.max(...values, lo);
    if (!values.length) hi = lo + 1;
    if (hi - lo < 1e-9) hi = lo + (Math.abs(lo) || 1);
    const left = 4;
    const top = 14;
    const bottom = height - 4;
    const right = width - 4;
    const y = (v) => bottom - ((v - lo) / (hi - lo)) * (bottom - top);

    ctx.font = "11px system-ui, sans-serif";
    ctx.fillStyle = ink;
    ctx.strokeStyle = ink;
    ctx.globalAlpha = 0.25;
    ctx.lineWidth = 1;
    for (const v of [lo, (lo + hi) / 2, hi]) {
      ctx.beginPath();
      ctx.moveTo(left, Math.round(y(v)) + 0.5);
      ctx.lineTo(right, Math.round(y(v)) + 0.5);
      ctx.stroke();
    }
    ctx.globalAlpha = 0.8;
    ctx.textBaseline = "bottom";
    ctx.fillText(this.format(hi), left, top - 1);
    ctx.globalAlpha = 1;

    if (this.points.length === 0) return;
    const first = this.points[0][0];
    const last = this.points[this.points.length - 1][0];
    const span = Math.max(last - first, 1);
    const x = (t) => right - ((last - t) / span) * (right - left);
    this.series.forEach((_, index) => {
      ctx.strokeStyle = this.colors[index];
      ctx.fillStyle = this.colors[index];
      ctx.lineWidth = 2;
      let drawing = false;
      ctx.beginPath();
      this.points.forEach(([t, vs], i) => {
        const v = vs[index];
        if (v === null || !Number.isFinite(v)) {
          drawing = false;
          return;
        }
        const px = this.points.length === 1 ? right : x(t);
        if (drawing) ctx.lineTo(px, y(v));
        else ctx.moveTo(px, y(v));
        const prev = this.points[i - 1];
        const next = this.points[i + 1];
        const isolated = (!prev || prev[1][index] === null) && (!next || next[1][index] === null);
        if (isolated) ctx.fillRect(px - 2, y(v) - 2, 4, 4);
        drawing = true;
      });
      ctx.stroke();
    });
  }
}
