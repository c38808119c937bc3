/** How backy runs itself as a child process; the logic lives in entry.ts with the Worker's. */
export { selfCommand } from "./entry.ts";
