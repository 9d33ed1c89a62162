// Starts the dashboard. A file of its own, not an inline <script>: the cloud's
// Content-Security-Policy allows scripts only from its own origin. build-frontend.sh
// points the import at the build's own folder, app-<hash>.
import init from '/stayopen_frontend.js';
init();
