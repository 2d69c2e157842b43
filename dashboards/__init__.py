"""Reports and dashboards over run directories (plotly). Reads run directories from disk only."""
