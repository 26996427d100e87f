// Mistakes pairchat.d.ts must catch. This file does NOT compile, on purpose: it is left out of
// tsconfig.json and checked with tsconfig.misuse.json by `cargo test --test typings`, which
// expects exactly the error marked on each line (`// TSnnnn: why`) and no other.

import { io, type Socket } from "socket.io-client";

import type { ClientToServerEvents, ServerToClientEvents } from "./pairchat";

const socket: Socket<ServerToClientEvents, ClientToServerEvents> = io("http://localhost:3000");

export async function misuse(code: string) {
  await socket.emitWithAck("sendMesage", { code, text: "hi" }); // TS2345: no such event
  await socket.emitWithAck("sendMessage", { code, text: 42 }); // TS2322: text is a string
  await socket.emitWithAck("joinRoom", { room: code }); // TS2353: the field is `code`
  socket.on("newMesage", () => {}); // TS2345: no such server event
  socket.on("userJoined", ({ id }) => id); // TS2339: the field is `userId`

  const joined = await socket.emitWithAck("joinRoom", { code });
  console.log(joined.messages); // TS2339: an error ack has no messages: narrow first
  if (joined.error === "Room does not exist") return; // TS2367: not one of the texts
  if (joined.error === "Rate limited") return; // TS2367: joinRoom is never rate-limited

  const sent = await socket.emitWithAck("sendMessage", { code, text: "hi" });
  if (sent.error === "Room full") return; // TS2367: sendMessage is never told Room full

  socket.on("roomUnavailable", ({ error }) => {
    if (error === "Room not found") return; // TS2367: only Room full or Server busy
  });
}
